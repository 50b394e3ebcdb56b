# cifar-bench image: the benchmark suite with exactly the dependencies of requirements.lock.
#
#   docker build -t cifar-bench .                                    # CUDA 13.0 build (the lock as CI has it)
#   docker build --build-arg CUDA_VARIANT=cu126 -t cifar-bench:cu126 .
#   docker run --gpus all -v "$PWD/runs:/work/runs" -v /data/cifar10:/data:ro -e BENCH_DATA=/data cifar-bench
#   # multi-node / InfiniBand, and room for loader workers and NCCL in /dev/shm (docs/containers.md):
#   docker run --gpus all --device /dev/infiniband --ulimit memlock=-1 --ipc=host ... cifar-bench
#   make image                                                        # cifar.sif for the cluster (Apptainer)
#
# Base image. Not pytorch/pytorch: its 2.14.1 images (2.14.1-cuda13.0-cudnn9-runtime,
# -cuda13.2-, -cuda12.6-) are Ubuntu 24.04 with the distribution's Python 3.12, while
# requirements.lock is compiled for Python 3.11 and pyproject.toml says requires-python
# ">=3.11,<3.12". So the base is the official Python 3.11 image and torch comes from the lock
# itself: PyPI's torch 2.14.1 wheel is the CUDA 13.0 build and carries its CUDA libraries as the
# nvidia-* wheels (cuBLAS 13.1.1.3, cuDNN 9.24.0.43 -- the same versions as in
# pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime). The host provides only the driver
# (docker --gpus / apptainer --nv). apptainer.def uses the same base string; tests check it.
# The digest pins the manifest list (amd64 + arm64) of python:3.11-slim-bookworm; to move it:
#   docker buildx imagetools inspect python:3.11-slim-bookworm    (the "Digest:" line)
# BASE_IMAGE is an argument only so that CI, which cannot reach Docker Hub, can build from a
# stand-in made from the same Debian release and Python (container/standin-base.sh); the default
# is the pinned image, and must stay equal to apptainer.def's From: (tests check both).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:b18992999dbe963a45a8a4da40ac2b1975be1a776d939d098c647482bcad5cba
FROM ${BASE_IMAGE}

# Which CUDA build of torch 2.14.1 to install (container/install.sh) and the NVIDIA driver the
# node needs for it (CUDA minor-version compatibility: 13.x needs driver >= 580, 12.x >= 525;
# https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html):
#   cu130  default; PyPI's wheel, every file hash-checked from requirements.lock.  driver >= 580
#          (the driver that ships with CUDA 13.0 is 580.65.06)
#   cu128  torch 2.14.1+cu128 from download.pytorch.org.  driver >= 525 via minor-version
#          compatibility; >= 570 (570.26, CUDA 12.8's own driver) for the full feature set
#   cu126  torch 2.14.1+cu126 from download.pytorch.org.  driver >= 525 (560.28.03 is CUDA
#          12.6's own driver); the choice for A100 nodes still on R535/R550
# Check a node with: nvidia-smi --query-gpu=driver_version --format=csv,noheader
ARG CUDA_VARIANT=cu130

LABEL org.opencontainers.image.title="cifar-bench" \
      org.opencontainers.image.description="Data-parallel PyTorch Lightning CIFAR-10 benchmark (baseline, dp, ddp)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.python="3.11" \
      org.opencontainers.image.torch="2.14.1" \
      org.opencontainers.image.cuda-variant="${CUDA_VARIANT}"

# PYTHONNOUSERSITE: packages in a mounted ~/.local must never shadow the image's.
# NVIDIA_*: what the NVIDIA container toolkit mounts into the container (`docker run --gpus`).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONNOUSERSITE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /opt/cifar-bench

# System libraries first (they change least): InfiniBand user-space libraries for NCCL.
COPY container/install.sh container/install.sh
RUN bash container/install.sh system

# Dependencies next, from the lock alone: a source edit does not reinstall them.
COPY requirements.lock pyproject.toml ./
RUN CUDA_VARIANT="${CUDA_VARIANT}" bash container/install.sh deps

# Then the package itself (no dependency resolution) and the suite that runs it.
COPY README.md ./
COPY bench bench
COPY suite suite
COPY container/selftest.sh container/selftest.sh
RUN bash container/install.sh package \
    && groupadd --gid 1000 bench \
    && useradd --create-home --uid 1000 --gid 1000 --shell /bin/bash bench \
    && mkdir -p /work/runs \
    && chown -R 1000:1000 /work

# Late, so a new commit does not invalidate the layers above. bench/measure/environment.py records
# BENCH_GIT_COMMIT (there is no .git in the image) and BENCH_IMAGE in every result JSON.
ARG BENCH_GIT_COMMIT=unknown
ARG BENCH_IMAGE=cifar-bench
LABEL org.opencontainers.image.revision="${BENCH_GIT_COMMIT}"
ENV BENCH_GIT_COMMIT="${BENCH_GIT_COMMIT}" \
    BENCH_IMAGE="${BENCH_IMAGE}"

# Not root: the user `bench` made above, by number so any runtime can resolve it.
USER 1000:1000
WORKDIR /work

# The suite with the full preset; data from $BENCH_DATA (mount it), results in /work/runs.
# Override e.g. with: docker run ... cifar-bench python -m bench run --case baseline --data synthetic ...
CMD ["python", "-m", "pytest", "/opt/cifar-bench/suite", "-p", "no:cacheprovider", "-ra", \
     "--bench-preset", "full", "--bench-out", "/work/runs", "--benchmark-json", "/work/runs/suite.json"]
