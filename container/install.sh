#!/usr/bin/env bash
# Run (as root, in the directory that holds requirements.lock, pyproject.toml and, for `package`,
# README.md, bench/ and suite/; /opt/cifar-bench in both images):
#   bash container/install.sh system                        # Dockerfile, first: the RDMA user-space libraries
#   CUDA_VARIANT=cu130 bash container/install.sh deps      # Dockerfile, before the source is copied
#   bash container/install.sh package                       # Dockerfile, after the source is copied
#   CUDA_VARIANT=cu130 bash container/install.sh all        # apptainer.def %post (all three steps)
#   CUDA_VARIANT=cu126 bash container/install.sh filter     # print the lock without the torch stack
#
# The one install recipe of both images (Dockerfile and apptainer.def call it, so they cannot
# drift). It installs requirements.lock -- the file CI's `make setup` installs -- with
# `pip install --require-hashes --no-deps`, so no resolver runs and every file is hash-checked.
#
# System packages (`system`): the InfiniBand/RoCE user-space libraries NCCL loads at run time --
# libibverbs1 with its providers (ibverbs-providers: mlx5 for ConnectX HCAs, ...), librdmacm1, and
# ibverbs-utils (ibv_devinfo, to see the HCAs from inside the image). Debian builds them from
# rdma-core; the `rdma-core` package itself (udev rules, daemons) is for hosts, not containers.
# Neither `apptainer --nv` nor `docker --gpus` brings them in: without them NCCL falls back to TCP
# sockets between nodes (NCCL_DEBUG=INFO then says "NET/Socket"). docs/containers.md has what
# Docker also needs (--device /dev/infiniband, --ulimit memlock=-1, --ipc=host or --shm-size).
#
# CUDA_VARIANT (the NVIDIA driver each needs is listed in the Dockerfile):
#   cu130 (default)  the lock as it is: PyPI's torch wheel is the CUDA 13.0 build, so the image
#                    holds exactly CI's files (torch, triton, nvidia-*, cuda-* included).
#   cu128, cu126     for nodes whose driver is too old for CUDA 13: the torch stack (torch,
#                    torchvision, triton, nvidia-*, cuda-bindings/-pathfinder/-toolkit) is filtered
#                    out of the lock, the rest is installed hash-checked as above, then the SAME
#                    torch/torchvision versions are installed as the +cu12x builds from
#                    download.pytorch.org. Those few files are version-pinned but not hash-pinned
#                    (the lock holds PyPI's hashes only), and pip picks their nvidia-*-cu12 deps.
#
# Environment: CUDA_VARIANT (default cu130), PYTHON (default python3), TORCH_INDEX_URL (default
# https://download.pytorch.org/whl). Exit status: 0 ok, 1 install or check failed, 2 bad usage.
set -euo pipefail

LOCK=requirements.lock
PY=${PYTHON:-python3}
VARIANT=${CUDA_VARIANT:-cu130}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl}
# Distributions that make up the CUDA torch stack in the lock (names as pip-compile writes them).
STACK_RE='^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-bindings|cuda-pathfinder|cuda-toolkit)=='

die() { echo "install.sh: $1" >&2; exit "${2:-1}"; }

# The version pinned for one distribution in the lock, e.g. `locked torch`.
locked() {
    sed -n "s/^$1==\([^ ;\\\\]*\).*/\1/p" "$LOCK" | head -n 1
}

# The CUDA version torch must report for the variant (torch.version.cuda).
cuda_of() {
    case "$1" in
        cu130) echo 13.0 ;;
        cu128) echo 12.8 ;;
        cu126) echo 12.6 ;;
        *) die "CUDA_VARIANT=$1 is not one of cu130, cu128, cu126" 2 ;;
    esac
}

# The lock without the torch stack: drops each matching requirement with its continuation lines
# (hashes) and its `# via` comments, keeps everything else as it is.
filter_lock() {
    awk -v re="$STACK_RE" '
        /^[A-Za-z0-9]/ { skip = ($0 ~ re) }
        !skip { print }
    ' "$LOCK"
}

check_python() {
    "$PY" - <<'EOF' || die "this Python does not satisfy requires-python in pyproject.toml" 1
import sys, tomllib
from pip._vendor.packaging.specifiers import SpecifierSet
spec = tomllib.load(open("pyproject.toml", "rb"))["project"]["requires-python"]
have = ".".join(map(str, sys.version_info[:3]))
print(f"install.sh: Python {have}, pyproject requires-python {spec!r}")
sys.exit(0 if have in SpecifierSet(spec) else 1)
EOF
}

check_torch() {
    local want cuda
    want=$(locked torch)
    cuda=$(cuda_of "$VARIANT")
    # Run outside the source tree so the installed packages are the ones imported.
    (cd / && "$PY" - "$want" "$cuda" <<'EOF') || die "torch in the image is not the lock's version/CUDA build" 1
import sys
import torch, torchvision, lightning
want, cuda = sys.argv[1], sys.argv[2]
print(f"install.sh: torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}, "
      f"lightning {lightning.__version__}")
assert torch.__version__.split("+")[0] == want, (torch.__version__, want)
assert torch.version.cuda == cuda, (torch.version.cuda, cuda)
EOF
}

deps() {
    [ -f "$LOCK" ] || die "no $LOCK in $(pwd)" 2
    local torch_v vision_v filtered
    torch_v=$(locked torch)
    vision_v=$(locked torchvision)
    [ -n "$torch_v" ] && [ -n "$vision_v" ] || die "torch/torchvision are not pinned in $LOCK" 1
    cuda_of "$VARIANT" >/dev/null
    check_python
    if [ "$VARIANT" = cu130 ]; then
        "$PY" -m pip install --no-cache-dir --require-hashes --no-deps -r "$LOCK"
    else
        filtered=$(mktemp --suffix=.lock)
        filter_lock >"$filtered"
        "$PY" -m pip install --no-cache-dir --require-hashes --no-deps -r "$filtered"
        rm -f "$filtered"
        "$PY" -m pip install --no-cache-dir --index-url "$TORCH_INDEX_URL/$VARIANT" \
            "torch==$torch_v+$VARIANT" "torchvision==$vision_v+$VARIANT"
    fi
    "$PY" -m pip check
    check_torch
}

# The RDMA libraries NCCL dlopen()s; the selftest (container/selftest.sh) checks they load.
RDMA_PACKAGES=(libibverbs1 ibverbs-providers librdmacm1 ibverbs-utils)
# A C/C++ compiler for --compile (torch.compile): inductor on CPU compiles C++ (without one it raises
# InvalidCxxCompiler) and Triton builds its CUDA driver module with cc at the first GPU kernel
# (triton/runtime/build.py). The base has none; about 200 MB. The selftest compiles a tiny model.
COMPILER_PACKAGES=(gcc g++ libc6-dev)

system() {
    command -v apt-get >/dev/null 2>&1 || die "the base image has no apt-get (a Debian base is expected)" 2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${RDMA_PACKAGES[@]}" "${COMPILER_PACKAGES[@]}" >/dev/null
    rm -rf /var/lib/apt/lists/*
    dpkg-query -W -f 'install.sh: ${Package} ${Version}\n' "${RDMA_PACKAGES[@]}" "${COMPILER_PACKAGES[@]}"
}

package() {
    [ -d bench ] && [ -d suite ] || die "bench/ and suite/ must be in $(pwd)" 2
    # Not editable, no build isolation (setuptools comes from the lock), no dependency resolution.
    "$PY" -m pip install --no-cache-dir --no-deps --no-build-isolation .
    rm -rf build ./*.egg-info
    "$PY" -m pip check
    (cd / && "$PY" -c "import bench, bench.cli; print('install.sh: bench from', bench.__file__)")
}

case "${1:-}" in
    system) system ;;
    deps) deps ;;
    package) package ;;
    all) system; deps; package ;;
    filter) cuda_of "$VARIANT" >/dev/null; filter_lock ;;
    *) die "usage: CUDA_VARIANT=cu130|cu128|cu126 bash container/install.sh system|deps|package|all|filter" 2 ;;
esac
