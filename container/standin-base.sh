#!/usr/bin/env bash
# Run (as root, with podman and debootstrap installed; tests/test_containers.py runs it):
#   bash container/standin-base.sh [TAG]      # default localhost/cifar-bench-base:bookworm-py311
#
# Makes a stand-in for the Dockerfile's base image (python:3.11-slim-bookworm) where Docker Hub
# cannot be reached: the same Debian release (bookworm) and Python minor version (3.11), from
# Debian's own packages (debootstrap --variant=minbase), imported into podman. Prints the tag.
#
# The official image differs from a minimal Debian python3 in three ways the product relies on;
# this script closes them here, so the Dockerfile and container/install.sh need no special case:
#   - `python` is a command (Debian only has `python3`): a symlink /usr/local/bin/python;
#   - `python -m pip` works (Debian's python3 has no pip module): Debian's python3-pip;
#   - the interpreter is not marked EXTERNALLY-MANAGED (PEP 668), so `pip install` into the system
#     Python is allowed, as in the official image: the marker file is removed;
#   - Python's C headers (Python.h) are there, as in the official image (python3-dev): torch.compile
#     (inductor on CPU, Triton's driver module on GPU) compiles C code against them.
# Also like the official image: ca-certificates, and no apt lists or caches left behind.
#
# Idempotent: an image with this tag made by the same version of this script is kept (its label
# cifar-bench.standin-script holds this file's sha256). Takes about 90 s and 300 MB when it builds.
# Environment: DEBIAN_MIRROR (default: http://deb.debian.org/debian).
# Exit status: 0 made or already there, 2 a tool is missing, else the failing step's status.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-localhost/cifar-bench-base:bookworm-py311}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
for tool in podman debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || { echo "standin-base.sh: '$tool' is not installed" >&2; exit 2; }
done
script_sum=$(sha256sum "$0" | cut -d' ' -f1)

have=$(podman image inspect --format '{{index .Labels "cifar-bench.standin-script"}}' "$tag" 2>/dev/null || true)
if [ "$have" = "$script_sum" ]; then
    echo "$tag"
    exit 0
fi

rootfs=$(mktemp -d /var/tmp/standin-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,python3-dev,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
# apt sources as in the official image: the release, its updates and security suites.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb

# The official image's defaults that matter for a build: PATH with /usr/local/bin first, a shell CMD.
tar -C "$rootfs" -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL cifar-bench.standin-script=$script_sum" \
    - "$tag" >/dev/null
echo "$tag"
