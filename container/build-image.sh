#!/usr/bin/env bash
# Run: make image   (or: bash container/build-image.sh [OUT.sif]; default cifar.sif in the repository root;
#      bash container/build-image.sh derived-def ARCHIVE prints apptainer.def with the BASE_ARCHIVE header)
#
# Builds the Apptainer image of cifar-bench:
#   default            apptainer build cifar.sif apptainer.def
#   IMAGE_FROM=docker  podman/docker build (the Dockerfile), saved as a docker-archive, then
#                      apptainer build cifar.sif docker-archive://ARCHIVE (for hosts where an OCI
#                      engine builds but Apptainer cannot build from a definition file)
#   no apptainer       with a working podman or docker (`podman info` / `docker info` succeeds, not
#                      just a binary on PATH): builds the OCI image from the Dockerfile, saves it as
#                      a docker-archive and prints the one command that makes cifar.sif from it on a
#                      machine with Apptainer: apptainer build cifar.sif docker-archive://ARCHIVE
# All install requirements.lock through container/install.sh. Settings (environment):
#   CUDA_VARIANT  cu130 (default; NVIDIA driver >= 580), cu128 or cu126 (driver >= 525); see Dockerfile
#   IMAGE_FROM    def (default) or docker
#   BASE_ARCHIVE  a docker-archive of the base image, for machines that cannot reach Docker Hub
#                 (CI: the stand-in, container/standin-base.sh): apptainer.def is built with its
#                 header alone replaced (Bootstrap: docker-archive, From: BASE_ARCHIVE); derived
#                 here from the file, never a second copy of the recipe (`derived-def` prints it)
#   APPTAINER_BUILD_FLAGS  extra `apptainer build` flags, e.g. "--bind CA:CA" (a TLS proxy's CA for
#                 pip in %post); --fakeroot is added for root (a %post needs it, unprivileged users
#                 get it by default)
#   MKSQUASHFS_ARGS  the SIF's compression (default Apptainer's, gzip); e.g. "-comp zstd
#                 -Xcompression-level 3": several times faster to build, about as small
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

# apptainer.def with its header's Bootstrap:/From: (the first of each, before any section) replaced
# by a docker-archive base; every other line as it is.
derived_def() {
    awk -v archive="$1" '
        /^%/ { body = 1 }
        !body && !b && /^Bootstrap:/ { print "Bootstrap: docker-archive"; b = 1; next }
        !body && !f && /^From:/ { print "From: " archive; f = 1; next }
        { print }
        END { if (!b || !f) exit 1 }
    ' apptainer.def
}
if [ "${1:-}" = derived-def ]; then
    derived_def "${2:?usage: build-image.sh derived-def ARCHIVE}"
    exit
fi

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
    OCI_ARCHIVE=$(cd "$(dirname "$archive")" && pwd)/$(basename "$archive")
}

if ! command -v apptainer >/dev/null 2>&1; then
    if engine=$(working_engine); then
        build_oci "$engine"
        [ -n "$OCI_ARCHIVE" ] || exit 0
        cat <<EOF
build-image.sh: 'apptainer' is not installed here, so $out was not built; built the OCI image
  $docker_tag and saved it to $OCI_ARCHIVE. On a machine with Apptainer (>= 1.3) run:
apptainer build $out docker-archive://$OCI_ARCHIVE
EOF
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

# shellcheck disable=SC2206  # lists of flags
build_flags=(--force ${APPTAINER_BUILD_FLAGS:-})
if [ "$(id -u)" = 0 ]; then build_flags+=(--fakeroot); fi
if [ -n "${MKSQUASHFS_ARGS:-}" ]; then build_flags+=(--mksquashfs-args "$MKSQUASHFS_ARGS"); fi
case "$from" in
    def)
        recipe=apptainer.def
        if [ -n "${BASE_ARCHIVE:-}" ]; then
            [ -f "$BASE_ARCHIVE" ] || { echo "build-image.sh: BASE_ARCHIVE=$BASE_ARCHIVE is not a file" >&2; exit 2; }
            recipe=$(mktemp ./.apptainer-def.XXXXXX)  # here: %files paths are relative to this folder
            trap 'rm -f "$recipe"' EXIT
            derived_def "$(cd "$(dirname "$BASE_ARCHIVE")" && pwd)/$(basename "$BASE_ARCHIVE")" >"$recipe"
        fi
        echo "build-image.sh: apptainer build $out apptainer.def (CUDA_VARIANT=$variant, commit $commit${BASE_ARCHIVE:+, base $BASE_ARCHIVE})"
        apptainer build "${build_flags[@]}" \
            --build-arg "CUDA_VARIANT=$variant" \
            --build-arg "BENCH_GIT_COMMIT=$commit" \
            --build-arg "BENCH_IMAGE=$(basename "$out")" \
            "$out" "$recipe"
        ;;
    docker)
        engine=$(working_engine) || { echo "build-image.sh: IMAGE_FROM=docker needs podman or docker with a working engine" >&2; exit 2; }
        OCI_ARCHIVE=${OCI_ARCHIVE:-cifar-bench-$variant.docker.tar}
        build_oci "$engine"
        echo "build-image.sh: apptainer build $out docker-archive://$OCI_ARCHIVE"
        apptainer build "${build_flags[@]}" "$out" "docker-archive://$OCI_ARCHIVE"
        ;;
    *)
        echo "build-image.sh: IMAGE_FROM=$from is not one of def, docker" >&2
        exit 2
        ;;
esac
echo "build-image.sh: built $out; check it with: apptainer test $out"
