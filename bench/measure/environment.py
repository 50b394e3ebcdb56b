"""Facts about the machine, software and job a run happened in, for its result JSON.

Everything here is read-only and cheap (no GPU work besides device queries); nothing fails a run:
facts that cannot be read are recorded as None.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import lightning
import torch
import torchmetrics
import torchvision

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE",
              "SLURM_CPUS_PER_TASK", "SLURM_JOB_PARTITION", "SLURM_STEP_ID")
REPO_ROOT = Path(__file__).resolve().parents[2]  # (bench/measure/environment.py)


class GPUUnavailableError(RuntimeError):
    """A GPU was requested but none is usable (no device, or a driver too old for this CUDA build)."""


def check_gpu_usable(count: int = 1) -> None:
    """Raise unless ``count`` CUDA devices are usable by this torch build.

    Raises:
        GPUUnavailableError: with torch's own reason (e.g. "The NVIDIA driver on your system is too
            old") and the CUDA version torch was built for.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
        found = torch.cuda.device_count() if available else 0
    if found >= count:
        return
    # torch warns only on its first device count in a process; CUDA's initialisation says it again
    reasons = "; ".join(str(w.message).strip() for w in caught) or (cuda_init_error() if found == 0 else None) \
        or ("no CUDA device is visible" if found == 0 else f"only {found} visible")
    raise GPUUnavailableError(
        f"--accelerator gpu needs {count} usable CUDA device(s), found {found} ({reasons}). "
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda}; check nvidia-smi, "
        "CUDA_VISIBLE_DEVICES and the driver, or run with --accelerator cpu")


#: torch's reasons meaning that no GPU is here at all (c10/cuda/CUDAFunctions.cpp, torch/cuda/__init__.py);
#: any other reason for CUDA being unavailable is a GPU that is present but unusable.
NO_GPU_REASONS = ("Found no NVIDIA driver", "No CUDA GPUs are available", "Torch not compiled with CUDA")


def cuda_init_error() -> str | None:
    """torch's own reason why CUDA cannot start here (None when it can, or was started already).

    ``torch.cuda.init()`` initialises CUDA, or raises with the driver's reason each time it is
    asked, unlike the device count, which warns once per process.
    """
    try:
        torch.cuda.init()
    except Exception as err:  # RuntimeError from the driver; AssertionError on a CPU-only build
        return str(err).strip() or type(err).__name__
    return None


def unusable_gpu_reason() -> str | None:
    """torch's reason when a GPU is present but unusable (e.g. "The NVIDIA driver on your system is
    too old"); None when CUDA works or when no GPU is here (no driver, none visible, CPU-only torch)."""
    if torch.cuda.is_available():
        return None
    reason = cuda_init_error()
    return None if reason is None or any(s in reason for s in NO_GPU_REASONS) else reason


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cpu_model() -> str | None:
    """The CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_facts() -> dict:
    """GPU names/count, driver, CUDA build, cuDNN and NCCL versions (None where absent)."""
    facts: dict = {"torch_cuda_build": torch.version.cuda, "gpu_names": [], "gpu_count": 0,
                   "cuda_driver": None, "cudnn": None, "nccl": None}
    if torch.version.cuda:
        try:
            facts["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except (RuntimeError, AttributeError):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not torch.cuda.is_available():
            return facts
    facts["gpu_count"] = torch.cuda.device_count()
    facts["gpu_names"] = [torch.cuda.get_device_name(i) for i in range(facts["gpu_count"])]
    facts["cudnn"] = torch.backends.cudnn.version()
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    facts["cuda_driver"] = driver.splitlines()[0] if driver else None
    return facts


def node_gpu_facts() -> dict:
    """This node's GPUs as nvidia-smi lists them (all GPUs of the node, one entry each): names,
    driver versions and MIG modes ("Enabled"/"Disabled"/"[N/A]"); empty lists without nvidia-smi.
    Called on every rank, so that each node's facts reach rank 0 (:func:`node_hardware`)."""
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,mig.mode.current", "--format=csv,noheader"])
    rows = [[c.strip() for c in line.split(",")] for line in (out or "").splitlines() if line.count(",") == 2]
    return {"gpu_names": [r[0] for r in rows], "drivers": sorted({r[1] for r in rows}),
            "mig_modes": [r[2] for r in rows]}


def node_hardware(per_rank: list[dict]) -> dict:
    """The GPUs of every node of a run from each rank's ``node_gpus`` (:func:`node_gpu_facts`), pure.

    Returns:
        ``{"per_node": {hostname: facts}, "mixed": bool, "differs_in": [field, ...]}``; ``mixed`` is
        True when the nodes differ in GPU models/count, driver or MIG mode (the run's figures then
        mix hardware: the result says so instead of one node's facts standing for all).
    """
    nodes: dict[str, dict] = {}
    for fact in per_rank:
        nodes.setdefault(fact["hostname"], fact.get("node_gpus") or {})
    fields = ("gpu_names", "drivers", "mig_modes")
    differs = [k for k in fields if len({str(n.get(k)) for n in nodes.values()}) > 1]
    if any(len(set(n.get("gpu_names") or [])) > 1 for n in nodes.values()) and "gpu_names" not in differs:
        differs.append("gpu_names")  # two GPU models inside one node
    return {"per_node": nodes, "mixed": bool(differs), "differs_in": differs}


def git_facts(root: Path = REPO_ROOT) -> dict:
    """Commit and dirty flag of the code that really ran (the tree ``bench`` was imported from).

    ``code_path`` is that tree; ``git_commit_source`` says where the commit was read:

    * ``"git"``: git in ``root`` (a checkout, with git at hand);
    * ``"slurm/suite.sh (host git)"``: no git here (inside an image), but ``root`` is the checkout
      slurm/suite.sh bound into the image, whose commit it read on the host ($BENCH_SOURCE_DIR,
      $BENCH_SOURCE_COMMIT, $BENCH_SOURCE_DIRTY);
    * ``"image (BENCH_GIT_COMMIT)"``: the package installed in the image (site-packages), whose
      commit was baked in at build time;
    * ``None``: a source tree without git or a commit given for it: unknown, never the image's.
    """
    facts = {"code_path": str(root), "git_commit": None, "git_dirty": None, "git_commit_source": None}
    commit = _run(["git", "-C", str(root), "rev-parse", "HEAD"])
    if commit is not None:
        status = _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
        return {**facts, "git_commit": commit, "git_dirty": bool(status), "git_commit_source": "git"}
    source_dir = os.environ.get("BENCH_SOURCE_DIR")
    if source_dir and os.environ.get("BENCH_SOURCE_COMMIT") and Path(source_dir).resolve() == root.resolve():
        return {**facts, "git_commit": os.environ["BENCH_SOURCE_COMMIT"], "git_commit_source": "slurm/suite.sh (host git)",
                "git_dirty": {"1": True, "0": False}.get(os.environ.get("BENCH_SOURCE_DIRTY", ""))}
    if root.name in ("site-packages", "dist-packages"):  # the installed copy: what the image was built from
        return {**facts, "git_commit": os.environ.get("BENCH_GIT_COMMIT"), "git_commit_source": "image (BENCH_GIT_COMMIT)"}
    return facts


def container_facts() -> dict:
    """The container image the run is in, if any (Apptainer/Singularity or Docker).

    ``container_image_id``: $BENCH_IMAGE_ID, the image's identity read on the host once per job
    (a SIF's header ID, "sif:<uuid>", from `apptainer sif header`; or a digest), since the image
    cannot read it from inside; None when no one passed it. The commit baked into the image is
    ``git_commit`` (BENCH_GIT_COMMIT, git_facts).
    """
    image = (os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
             or os.environ.get("BENCH_IMAGE"))
    runtime = "apptainer" if os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER") \
        else ("docker" if Path("/.dockerenv").exists() else None)
    return {"container_runtime": runtime, "container_image": image,
            "container_image_id": os.environ.get("BENCH_IMAGE_ID") or None}


def runtime_facts() -> dict:
    """Where this rank's Python runs, gathered from every rank (``world.runtime_per_rank``): its prefix
    (``sys.prefix``: e.g. the image's ``/usr`` or a host ``.venv``) and the container (:func:`container_facts`)."""
    return {"python_prefix": sys.prefix, **container_facts()}


#: environment variables that steer the libraries' kernels, threads, memory or compilation (prefixes), recorded
#: as ``library_env`` so a history or comparison can name them ("ATEN_CPU_CAPABILITY: unset -> default");
#: NCCL_*/GLOO_* are recorded apart (``world.comm_env``, bench.run.comm)
LIBRARY_ENV_PREFIXES = ("OMP_", "KMP_", "GOMP_", "MKL_", "ONEDNN_", "DNNL_", "ATEN_", "OPENBLAS_", "CUBLAS",
                        "CUDNN_", "CUDA_LAUNCH_BLOCKING", "CUDA_MODULE_LOADING", "CUDA_DEVICE_MAX_CONNECTIONS",
                        "PYTORCH_", "TORCH_", "TORCHINDUCTOR_", "NVIDIA_TF32_OVERRIDE", "LD_PRELOAD", "MALLOC_")


def library_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The set environment variables named by :data:`LIBRARY_ENV_PREFIXES` in ``environ`` (default: as this
    process started, :data:`ENV_AT_START`), sorted by name."""
    source = ENV_AT_START if environ is None else environ
    return {k: v for k, v in sorted(source.items()) if k.startswith(LIBRARY_ENV_PREFIXES)}


#: the environment as this process started (read when this module is imported, at the start of every
#: process of a run): Lightning's launcher sets OMP_NUM_THREADS later for ddp, and the thread plan
#: (world.thread_plan) records the threads a run used; what a user set is what a comparison should name
ENV_AT_START = dict(os.environ)


def installed_packages() -> dict[str, str]:
    """Every installed Python distribution and its version (what `pip freeze` would list)."""
    from importlib import metadata

    return dict(sorted((d.metadata["Name"], d.version) for d in metadata.distributions() if d.metadata["Name"]))


def collect() -> dict:
    """All environment facts as a flat JSON-serialisable dict."""
    return {
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "python_prefix": sys.prefix,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        # the ATen CPU kernels in use (e.g. AVX512, AVX2, DEFAULT): the CPU and ATEN_CPU_CAPABILITY decide
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "library_env": library_env(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        **gpu_facts(),
        "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ} or None,
        **container_facts(),
        **git_facts(),
        "packages": installed_packages(),
    }
