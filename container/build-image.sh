#!/usr/bin/env bash
# Run: make image   (or: bash container/build-image.sh [OUT.sif]; default cifar.sif in the repository root)
#
# Builds the Apptainer image of cifar-bench:
#   default            apptainer build cifar.sif apptainer.def
#   IMAGE_FROM=docker  docker build (the Dockerfile), then apptainer build cifar.sif docker-daemon://...
#                      (for hosts where Docker builds but Apptainer cannot build from a definition file)
#   no apptainer       with a working podman or docker (`podman info` / `docker info` succeeds, not
#                      just a binary on PATH): builds the OCI image from the Dockerfile, saves it as
#                      a docker-archive and prints the one command that makes cifar.sif from it on a
#                      machine with Apptainer: apptainer build cifar.sif docker-archive://ARCHIVE
# All install requirements.lock through container/install.sh. Settings (environment):
#   CUDA_VARIANT  cu130 (default; NVIDIA driver >= 580), cu128 or cu126 (driver >= 525); see Dockerfile
#   IMAGE_FROM    def (default) or docker
#   DOCKER_TAG    tag of the intermediate Docker/OCI image (default cifar-bench:$CUDA_VARIANT)
#   ENGINE        podman or docker for the OCI path (default: the first that works)
#   ENGINE_FLAGS  global engine flags, e.g. "--runtime runc" (podman where crun cannot run)
#   BUILD_FLAGS   extra build flags, e.g. "--network host --ulimit nofile=1024:1024 -v CA:CA:ro"
#   BASE_IMAGE    build argument for the Dockerfile's base (default: its pinned python:3.11 image)
#   OCI_ARCHIVE   where the docker-archive goes (default cifar-bench-$CUDA_VARIANT.docker.tar;
#                 empty: build the OCI image only)
# Exit status: 0 built (cifar.sif, or the OCI image and its archive where apptainer is missing),
# 2 a tool is missing or a setting is wrong, else the failing build's status.
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

# The commit the image is built from, recorded as BENCH_GIT_COMMIT in every result JSON;
# "-dirty" when tracked files differ from it (the image then holds uncommitted changes).
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit-dirty"
fi

# The first of podman, docker whose engine answers (a docker client without a daemon does not).
working_engine() {
    local e
    for e in ${ENGINE:-podman docker}; do
        # shellcheck disable=SC2086  # ENGINE_FLAGS is a list of flags
        if command -v "$e" >/dev/null 2>&1 && "$e" ${ENGINE_FLAGS:-} info >/dev/null 2>&1; then
            echo "$e"
            return 0
        fi
    done
    return 1
}

# Build the OCI image from the Dockerfile; save it as a docker-archive for `apptainer build`.
build_oci() {
    local engine=$1 archive=${OCI_ARCHIVE-cifar-bench-$variant.docker.tar}
    local base_arg=()
    if [ -n "${BASE_IMAGE:-}" ]; then base_arg=(--build-arg "BASE_IMAGE=$BASE_IMAGE"); fi
    echo "build-image.sh: $engine build -t $docker_tag . (CUDA_VARIANT=$variant, commit $commit)"
    # shellcheck disable=SC2086  # ENGINE_FLAGS and BUILD_FLAGS are lists of flags
    "$engine" ${ENGINE_FLAGS:-} build ${BUILD_FLAGS:-} "${base_arg[@]}" \
        --build-arg "CUDA_VARIANT=$variant" \
        --build-arg "BENCH_GIT_COMMIT=$commit" \
        --build-arg "BENCH_IMAGE=$docker_tag" \
        -t "$docker_tag" .
    [ -n "$archive" ] || return 0
    rm -f "$archive"
    if [ "$engine" = podman ]; then
        # shellcheck disable=SC2086
        podman ${ENGINE_FLAGS:-} save --format docker-archive -o "$archive" "$docker_tag"
    else
        # shellcheck disable=SC2086
        docker ${ENGINE_FLAGS:-} save -o "$archive" "$docker_tag"
    fi
    archive=$(cd "$(dirname "$archive")" && pwd)/$(basename "$archive")
    cat <<EOF
build-image.sh: 'apptainer' is not installed here, so $out was not built; built the OCI image
  $docker_tag and saved it to $archive. On a machine with Apptainer (>= 1.3) run:
apptainer build $out docker-archive://$archive
EOF
}

if ! command -v apptainer >/dev/null 2>&1; then
    if engine=$(working_engine); then
        build_oci "$engine"
        exit 0
    fi
    cat >&2 <<EOF
build-image.sh: cannot build $out: 'apptainer' is not installed (not on PATH), and neither podman
  nor docker has a working engine ('podman info' / 'docker info' failed).
  Install Apptainer (>= 1.3): https://apptainer.org/docs/admin/main/installation.html
  then run 'make image' again. With podman or a Docker daemon, 'make image' builds the OCI image
  instead and prints the 'apptainer build $out docker-archive://...' command for a machine with Apptainer.
EOF
    exit 2
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
