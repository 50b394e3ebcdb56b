#!/usr/bin/env bash
# Run: make image   (or: bash container/build-image.sh [OUT.sif]; default cifar.sif in the repository root)
#
# Builds the Apptainer image of cifar-bench:
#   default            apptainer build cifar.sif apptainer.def
#   IMAGE_FROM=docker  docker build (the Dockerfile), then apptainer build cifar.sif docker-daemon://...
#                      (for hosts where Docker builds but Apptainer cannot build from a definition file)
# Both install requirements.lock through container/install.sh. Settings (environment):
#   CUDA_VARIANT  cu130 (default; NVIDIA driver >= 580), cu128 or cu126 (driver >= 525); see Dockerfile
#   IMAGE_FROM    def (default) or docker
#   DOCKER_TAG    tag of the intermediate Docker image (default cifar-bench:$CUDA_VARIANT)
# Exit status: 0 built, 2 a tool is missing or a setting is wrong, else the failing build's status.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-cifar.sif}
variant=${CUDA_VARIANT:-cu130}
from=${IMAGE_FROM:-def}
docker_tag=${DOCKER_TAG:-cifar-bench:$variant}

case "$variant" in
    cu130 | cu128 | cu126) ;;
    *) echo "build-image.sh: CUDA_VARIANT=$variant is not one of cu130, cu128, cu126" >&2; exit 2 ;;
esac

if ! command -v apptainer >/dev/null 2>&1; then
    cat >&2 <<EOF
build-image.sh: cannot build $out: 'apptainer' is not installed (not on PATH).
  Install Apptainer (>= 1.3): https://apptainer.org/docs/admin/main/installation.html
  then run 'make image' again. A Docker image alone can be built without it:
    docker build -t cifar-bench .
EOF
    exit 2
fi

# The commit the image is built from, recorded as BENCH_GIT_COMMIT in every result JSON;
# "-dirty" when tracked files differ from it (the image then holds uncommitted changes).
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit-dirty"
fi

case "$from" in
    def)
        echo "build-image.sh: apptainer build $out apptainer.def (CUDA_VARIANT=$variant, commit $commit)"
        apptainer build --force \
            --build-arg "CUDA_VARIANT=$variant" \
            --build-arg "BENCH_GIT_COMMIT=$commit" \
            --build-arg "BENCH_IMAGE=$(basename "$out")" \
            "$out" apptainer.def
        ;;
    docker)
        if ! command -v docker >/dev/null 2>&1; then
            echo "build-image.sh: IMAGE_FROM=docker needs 'docker' on PATH (https://docs.docker.com/engine/install/)" >&2
            exit 2
        fi
        echo "build-image.sh: docker build -t $docker_tag . then apptainer build $out docker-daemon://$docker_tag"
        docker build \
            --build-arg "CUDA_VARIANT=$variant" \
            --build-arg "BENCH_GIT_COMMIT=$commit" \
            --build-arg "BENCH_IMAGE=$docker_tag" \
            -t "$docker_tag" .
        apptainer build --force "$out" "docker-daemon://$docker_tag"
        ;;
    *)
        echo "build-image.sh: IMAGE_FROM=$from is not one of def, docker" >&2
        exit 2
        ;;
esac
echo "build-image.sh: built $out; check it with: apptainer test $out"
