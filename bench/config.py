"""Benchmark configuration: one frozen dataclass, validated on creation, never mutated.

A run is fully described by a :class:`BenchConfig`. Presets give the starting values
(:data:`PRESETS`); command-line options override single fields through
:func:`make_config`, which returns a new validated object (``dataclasses.replace``).
Every field is recorded in the run's JSON, so two runs can be checked for doing the same work.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CASES = ("baseline", "dp", "ddp")
MODELS = ("simple_cnn", "resnet18")
ACCELERATORS = ("cpu", "gpu")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
CHECKSUM_MODES = ("official", "skip")  # or a path to a JSON file {filename: md5}
DATA_PATHS = ("pil", "uint8", "device")  # how training batches are made (README "Data paths")

#: Environment variable that gives the data path when ``--data`` is not given.
DATA_ENV = "BENCH_DATA"


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which field and what is allowed."""


@dataclass(frozen=True)
class BenchConfig:
    """Everything that defines one benchmark run (fields carry their unit in the comment).

    Raises:
        ConfigError: on creation, when a field is out of range or fields contradict each other
            (for example a global batch size that the world size does not divide).
    """

    case: str = "baseline"  # one of CASES
    preset: str = "smoke"  # preset the values started from (recorded, not re-applied)
    model: str = "simple_cnn"  # one of MODELS
    data: str = "synthetic"  # path to the data set (folder or .tar.gz) or "synthetic"
    data_checksums: str = "official"  # "official", "skip", or path to JSON {file name: md5}
    cache_dir: str = ""  # folder for the decoded-tensor cache; "" = $BENCH_CACHE or ~/.cache/cifar-bench
    train_samples: int = 0  # training images used per epoch (class-balanced subset); 0 = all
    test_samples: int = 0  # test images evaluated (class-balanced subset); 0 = all
    epochs: int = 1  # passes over the training set; 0 = no training, only test the initial weights
    global_batch_size: int = 256  # images per optimizer step, summed over all devices
    eval_batch_size: int = 1000  # images per test step, per device
    lr: float = 0.05  # SGD learning rate (per optimizer step on the global batch)
    momentum: float = 0.9  # SGD momentum (dimensionless)
    weight_decay: float = 5e-4  # L2 penalty (dimensionless)
    seed: int = 0  # seed of weights, data order, augmentation and synthetic data
    accelerator: str = "cpu"  # "cpu" or "gpu"; "gpu" fails when no usable GPU exists
    devices: int = 1  # devices per node (GPUs, or processes on CPU); dp: GPUs driven by one process
    num_nodes: int = 1  # nodes (ddp only)
    precision: str = "32-true"  # Lightning precision string, one of PRECISIONS
    num_workers: int = -1  # DataLoader worker processes per rank; -1 = auto (see bench.cases.loader_workers)
    pin_memory: bool = False  # page-locked host memory for batches (GPU only)
    persistent_workers: bool = False  # keep loader workers between epochs (needs num_workers > 0)
    data_path: str = "uint8"  # one of DATA_PATHS: per-image PIL, per-image uint8 tensors, or batched on the device
    tf32: bool = True  # TensorFloat-32 for float32 matmuls and cuDNN convolutions (Ampere+ GPUs only)
    channels_last: bool = False  # network weights and input batches in torch.channels_last memory format
    val_every_n_epochs: int = 0  # evaluate the test set during fit every N epochs; 0 = only after fit
    accuracy_floor: float = 0.0  # sanity check: test accuracy must reach this fraction (0..1)
    init_weights: str = ""  # network state_dict file (from --save-weights) to start from; "" = seeded init
    save_weights: bool = False  # write the trained network's state_dict beside the result JSON
    out_dir: str = "runs"  # folder that receives the result JSON
    step_breakdown: bool = True  # time data wait / compute / all-reduce of every step (GPU: CUDA events read once per epoch)
    profile: bool = False  # torch.profiler over a window of training steps; the result is marked profiled
    profile_wait: int = 5  # training steps skipped before the profiler's warm-up (steps)
    profile_warmup: int = 2  # steps traced and discarded (>= 1), so start-up costs stay out of the window (steps)
    profile_active: int = 3  # steps recorded in the trace (steps); bigger windows give bigger traces
    compile: bool = False  # torch.compile the network (opt-in; the first steps of the timed fit include compiling)

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_ranges(self)
        _check_world(self)

    @property
    def world_size(self) -> int:
        """Number of training processes (ranks): devices x nodes for ddp, else 1."""
        return self.devices * self.num_nodes if self.case == "ddp" else 1

    @property
    def per_device_batch_size(self) -> int:
        """Images per device per optimizer step: global batch / data-parallel devices."""
        return self.global_batch_size // self.data_parallel_size

    @property
    def data_parallel_size(self) -> int:
        """Devices that split each global batch: world size for ddp, devices for dp, else 1."""
        if self.case == "ddp":
            return self.world_size
        return self.devices if self.case == "dp" else 1

    @property
    def data_kind(self) -> str:
        """"synthetic", "official" or "image_folder" (the layout found at ``data``), else "unknown"."""
        if self.data == "synthetic":
            return "synthetic"
        from bench.sources import DataError, detect_kind  # (sources imports torch: only when needed)

        try:
            return detect_kind(Path(self.data).expanduser())
        except DataError:
            return "unknown"

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (JSON-serialisable), plus the derived ``data_kind``."""
        return {**dataclasses.asdict(self), "data_kind": self.data_kind}


def _check_choices(c: BenchConfig) -> None:
    for name, allowed in (("case", CASES), ("model", MODELS), ("accelerator", ACCELERATORS),
                          ("precision", PRECISIONS), ("preset", tuple(PRESETS)), ("data_path", DATA_PATHS)):
        if getattr(c, name) not in allowed:
            raise ConfigError(f"{name}={getattr(c, name)!r} is not one of {', '.join(allowed)}")
    if not c.data:
        raise ConfigError(f"no data set given: pass --data PATH (or 'synthetic'), or set {DATA_ENV}")


def _check_ranges(c: BenchConfig) -> None:
    positive = ("global_batch_size", "eval_batch_size", "devices", "num_nodes")
    for name in positive:
        if getattr(c, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(c, name)}")
    for name in ("epochs", "train_samples", "test_samples", "val_every_n_epochs", "seed"):
        if getattr(c, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(c, name)}")
    if c.num_workers < -1:
        raise ConfigError(f"num_workers must be >= 0, or -1 for auto; got {c.num_workers}")
    if not (c.lr > 0 and 0 <= c.momentum < 1 and c.weight_decay >= 0):
        raise ConfigError("need lr > 0, 0 <= momentum < 1 and weight_decay >= 0")
    if not 0.0 <= c.accuracy_floor <= 1.0:
        raise ConfigError(f"accuracy_floor is a fraction in [0, 1], got {c.accuracy_floor}")
    if c.profile_wait < 0 or c.profile_warmup < 1 or c.profile_active < 1:
        raise ConfigError("the profiler window needs profile_wait >= 0, profile_warmup >= 1 (tracing start-up "
                          "costs land in the first traced step) and profile_active >= 1")
    if c.profile and c.epochs == 0:
        raise ConfigError("--profile traces training steps: use --epochs >= 1")
    if c.profile and c.train_samples and -(-c.train_samples // c.global_batch_size) * c.epochs < 2:
        raise ConfigError("--profile needs at least 2 training steps (1 warm-up, 1 recorded): raise "
                          "--train-samples or --epochs, or lower --global-batch-size")
    _check_loader(c)
    if c.precision != "32-true" and c.accelerator == "cpu" and c.precision == "16-mixed":
        raise ConfigError("precision 16-mixed needs a GPU; use 32-true or bf16-mixed on CPU")


def _check_loader(c: BenchConfig) -> None:
    if c.persistent_workers and c.num_workers == 0:
        raise ConfigError("persistent_workers needs num_workers > 0")
    if c.data_path == "device" and c.num_workers > 0:
        raise ConfigError("the device path gathers batches on the device and needs no loader workers; "
                          "use --num-workers 0 or -1")
    if c.data_path == "device" and (c.pin_memory or c.persistent_workers):
        raise ConfigError("the device path has no loader workers and copies the training set once: drop "
                          "--pin-memory and --persistent-workers")


def _check_world(c: BenchConfig) -> None:
    if c.case == "baseline" and (c.devices != 1 or c.num_nodes != 1):
        raise ConfigError("case baseline runs on exactly one device: use --devices 1 --num-nodes 1")
    if c.case == "dp":
        if c.num_nodes != 1:
            raise ConfigError("case dp drives the GPUs of one node: DataParallel cannot span nodes")
        if c.accelerator != "gpu":
            raise ConfigError("case dp needs --accelerator gpu (DataParallel splits batches over GPUs)")
    if c.global_batch_size % c.data_parallel_size:
        raise ConfigError(
            f"global_batch_size {c.global_batch_size} is not divisible by the {c.data_parallel_size} "
            f"data-parallel devices; choose a multiple of {c.data_parallel_size}")


# Preset values. Times and accuracies measured on the machines named in README.md ("Presets").
PRESETS: dict[str, dict[str, Any]] = {
    # A few thousand images, one epoch: checks the whole path end to end on 2 CPU cores.
    "smoke": dict(train_samples=10000, test_samples=2000, epochs=1, global_batch_size=64,
                  eval_batch_size=500, lr=0.02, accelerator="cpu"),
    # The real data set, sized for the main job on 2 CPU cores (baseline + ddp in < 3 min).
    "cpu": dict(train_samples=0, test_samples=0, epochs=2, global_batch_size=64,
                eval_batch_size=1000, lr=0.02, accelerator="cpu",
                accuracy_floor=0.40),
    # The whole data set on GPUs, enough epochs for a meaningful accuracy.
    "full": dict(train_samples=0, test_samples=0, epochs=20, global_batch_size=256,
                 eval_batch_size=1000, lr=0.05, accelerator="gpu",
                 pin_memory=True, persistent_workers=True, accuracy_floor=0.60),
}


def make_config(preset: str = "smoke", **overrides: Any) -> BenchConfig:
    """Build a validated config from a preset and explicit overrides.

    Args:
        preset: a key of :data:`PRESETS`.
        **overrides: field values; ``None`` means "keep the preset's value".
            ``data`` defaults to the environment variable ``BENCH_DATA``.

    Raises:
        ConfigError: unknown preset or field, or an invalid resulting config.
    """
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is not one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(BenchConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
    values: dict[str, Any] = {"preset": preset, **PRESETS[preset]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("data", os.environ.get(DATA_ENV, ""))
    if values["accelerator"] == "cpu" and overrides.get("pin_memory") is None:
        values["pin_memory"] = False  # page-locking only helps host-to-GPU copies
    if values.get("data_path") == "device":  # no loader workers: the preset's loader settings do not apply
        for key in ("pin_memory", "persistent_workers"):
            if overrides.get(key) is None:
                values[key] = False
    return BenchConfig(**values)
