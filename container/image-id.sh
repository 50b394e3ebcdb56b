#!/usr/bin/env bash
# Run on the host, once per job, before the runs start:
#   export APPTAINERENV_BENCH_IMAGE_ID=$(bash container/image-id.sh cifar.sif)   # or apptainer exec --env BENCH_IMAGE_ID=...
#
# The image's identity for every result JSON (bench/measure/environment.py: container_image_id),
# which the image cannot read from inside: "sif:<uuid>", the ID `apptainer build` wrote into the SIF's
# header (a new one each build, even of the same recipe; read in milliseconds), or with --digest
# "sha256:<hex>" of the whole file (same bytes, same digest; 10-30 s for a multi-GB SIF).
# Exit status: 0 printed; 2 not a SIF file or no apptainer.
set -euo pipefail
digest=0
if [ "${1:-}" = --digest ]; then digest=1; shift; fi
sif=${1:?usage: image-id.sh [--digest] FILE.sif}
[ -f "$sif" ] || { echo "image-id.sh: $sif is not a file" >&2; exit 2; }
if [ "$digest" = 1 ]; then
    echo "sha256:$(sha256sum "$sif" | cut -d' ' -f1)"
    exit 0
fi
command -v apptainer >/dev/null 2>&1 || { echo "image-id.sh: 'apptainer' is not installed (use --digest)" >&2; exit 2; }
id=$({ apptainer sif header "$sif" 2>/dev/null || true; } | sed -n 's/^ID:[[:space:]]*//p' | head -n 1)
[ -n "$id" ] || { echo "image-id.sh: $sif has no SIF header ID (not a SIF file?)" >&2; exit 2; }
echo "sif:$id"
