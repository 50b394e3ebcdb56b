"""Benchmark configuration: one frozen dataclass, validated on creation, never mutated.

A run is fully described by a :class:`BenchConfig`. Presets give the starting values
(:data:`PRESETS`); command-line options override single fields through
:func:`make_config`, which returns a new validated object (``dataclasses.replace``).
Every field is recorded in the run's JSON, so two runs can be checked for doing the same work.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CASES = ("baseline", "dp", "ddp")
MODELS = ("simple_cnn", "resnet18")
ACCELERATORS = ("cpu", "gpu")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
CHECKSUM_MODES = ("official", "skip")  # or a path to a JSON file {filename: md5}
DATA_PATHS = ("pil", "uint8", "device")  # how training batches are made (README "Data paths")
SCALINGS = ("strong", "weak")  # scaling modes of a sweep (docs/scaling.md)

#: Environment variable that gives the data path when ``--data`` is not given.
DATA_ENV = "BENCH_DATA"
#: Longest --pg-timeout-s, seconds: a week (torch holds the timeout as int milliseconds; far more overflows).
MAX_PG_TIMEOUT_S = 7 * 24 * 3600.0
PRESET_NAMES = ("smoke", "cpu", "full")  # the keys of PRESETS (defined below the class that checks them)


def _doc(default: Any, help: str, unit: str | None = None, **extra: Any) -> Any:
    """A config field with its documentation, readable at run time (``dataclasses.fields(...)[i].metadata``).

    The ``run`` command's options and their ``--help`` lines are generated from it (bench/run/command.py,
    bench/core/options.py).
    Metadata keys: ``help`` (one line), ``unit`` (or None), and optionally ``choices`` (allowed
    values), ``metavar``, ``option`` (the option's name when not ``--field-name``), ``default_text`` (the
    default as a user sees it, where the field's value is a placeholder) and ``default_note``
    (where the default changes with the case or the machine).
    """
    return field(default=default, metadata={"help": help, "unit": unit, **extra})


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option (``--field-name``) and what is allowed."""


def option_for(name: str) -> str:
    """The ``cifar-bench run`` option of config field ``name``: its metadata ``option``, else
    ``--field-name``. Raises KeyError for a name that is not a BenchConfig field."""
    meta = {f.name: f.metadata for f in dataclasses.fields(BenchConfig)}[name]
    return meta.get("option", "--" + name.replace("_", "-"))


@dataclass(frozen=True)
class BenchConfig:
    """Everything that defines one benchmark run; each field's meaning and unit are in its metadata.

    Raises:
        ConfigError: on creation, when a field is out of range or fields contradict each other
            (for example a global batch size that the world size does not divide).
    """

    case: str = _doc("baseline", "benchmark case: baseline (one device), dp (DataParallel), ddp (one process "
                     "per device)", choices=CASES)
    preset: str = _doc("smoke", "values for every option not given (README 'Cases and presets')",
                       choices=PRESET_NAMES)
    model: str = _doc("simple_cnn", "network to train", choices=MODELS)
    data: str = _doc("synthetic", "data set: a folder or .tar.gz (official CIFAR-10 or class-per-folder), or "
                     "'synthetic'", default_text=f"${DATA_ENV}",
                     metavar="PATH")
    data_checksums: str = _doc("official", "MD5 check of the official files: official, skip, or a JSON file "
                               "{file name: md5}",
                               metavar="MODE|PATH")
    cache_dir: str = _doc("", "folder of the decoded-data cache",
                          default_text="$BENCH_CACHE, else ~/.cache/cifar-bench", metavar="PATH")
    train_samples: int = _doc(0, "training images per epoch (class-balanced subset); 0 = all", unit="images")
    test_samples: int = _doc(0, "test images evaluated (class-balanced subset); 0 = all", unit="images")
    epochs: int = _doc(1, "passes over the training set; 0 = no training, only test the initial weights",
                       unit="epochs")
    global_batch_size: int = _doc(256, "images per optimizer step, summed over all devices", unit="images")
    eval_batch_size: int = _doc(1000, "images per test step, per device", unit="images")
    lr: float = _doc(0.05, "SGD learning rate (per optimizer step on the global batch)")
    momentum: float = _doc(0.9, "SGD momentum (dimensionless)")
    weight_decay: float = _doc(5e-4, "L2 penalty (dimensionless)")
    seed: int = _doc(0, "seed of weights, data order, augmentation and synthetic data")
    accelerator: str = _doc("cpu", "cpu or gpu; gpu fails when no usable GPU exists (never falls back to CPU)",
                            choices=ACCELERATORS, default_note="dp: gpu")
    devices: int = _doc(1, "devices per node (GPUs, or processes on CPU); dp: GPUs driven by one process",
                        unit="devices", default_note="dp: every GPU torch sees on the node, at least 2")
    num_nodes: int = _doc(1, "nodes (ddp only; above 1 the ranks are started by srun, e.g. sbatch slurm/suite.sh, "
                          "or on each node with NODE_RANK, MASTER_ADDR and MASTER_PORT set)", unit="nodes")
    precision: str = _doc("32-true", "Lightning precision", choices=PRECISIONS)
    num_workers: int = _doc(-1, "DataLoader worker processes per rank; -1 = auto (the rank's cores but one, at "
                            "most 4 on GPU)", unit="processes")
    pin_memory: bool = _doc(False, "page-locked host memory for batches (GPU only)", default_note="off on CPU")
    persistent_workers: bool = _doc(False, "keep loader workers between epochs (needs --num-workers > 0)")
    data_path: str = _doc("uint8", "how training batches are made: pil (PIL transforms per image), uint8 (uint8 "
                          "tensor transforms per image), device (training set on the device, augmented per batch)",
                          choices=DATA_PATHS)
    tf32: bool = _doc(True, "TensorFloat-32 for float32 matmuls and cuDNN convolutions (Ampere+ GPUs only)")
    channels_last: bool = _doc(False, "network weights and input batches in torch.channels_last memory format")
    val_every_n_epochs: int = _doc(0, "evaluate the test set during fit every N epochs; 0 = only after fit",
                                   unit="epochs")
    accuracy_floor: float = _doc(0.0, "sanity check: the test accuracy must reach this fraction (0..1)",
                                 unit="fraction")
    init_weights: str = _doc("", "network state_dict file (from --save-weights) to start from; '' = seeded init",
                             metavar="PATH")
    save_weights: bool = _doc(False, "write the trained network's state_dict beside the result JSON "
                              "(<run_id>.weights.pt)")
    out_dir: str = _doc("runs", "folder that receives the result JSON", option="--out", metavar="PATH")
    step_breakdown: bool = _doc(True, "time each step's data wait, compute and all-reduce (GPU: CUDA events, "
                                "read once per epoch)")
    profile: bool = _doc(False, "torch.profiler over a window of training steps, traces in "
                         "OUT/profiles/RUN_ID/rank<R>/; the result is marked profiled (never a benchmark figure)")
    profile_wait: int = _doc(5, "training steps skipped before the profiler's warm-up", unit="steps")
    profile_warmup: int = _doc(2, "steps traced and discarded (>= 1), so start-up costs stay out of the window",
                               unit="steps")
    profile_active: int = _doc(3, "steps recorded in the trace; bigger windows give bigger traces", unit="steps")
    cudnn_benchmark: bool | None = _doc(None, "cuDNN autotuner for convolutions (recorded resolved)",
                                        default_text="on for GPU, off for CPU")
    sync_batchnorm: bool = _doc(False, "BatchNorm statistics over all ranks (ddp on GPU: SyncBatchNorm); off = per rank")
    scaling: str = _doc("strong", "strong (same global work at every world size) or weak (same work per device: "
                        "batch, images and lr given are the 1-device point's, scaled by the devices; docs/scaling.md)",
                        choices=SCALINGS)
    pg_timeout_s: float = _doc(300.0, "longest wait for a missing or dead rank in set-up or a collective before the "
                               "run fails (at most a week)", unit="s")
    comm_check: bool = _doc(True, "ddp: a short all-reduce check of the interconnect (bus bandwidth per message "
                            "size, per node pair) before the timed fit, recorded as the result's interconnect "
                            "(docs/interconnect.md)")
    compile: bool = _doc(False, "torch.compile the network (opt-in; the first steps of the timed fit include "
                         "compiling)")

    def __post_init__(self) -> None:
        if self.cudnn_benchmark is None:  # resolved here, so the recorded config says what ran
            object.__setattr__(self, "cudnn_benchmark", self.accelerator == "gpu")
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

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (JSON-serialisable); a result adds the detected ``data_kind``
        (:func:`bench.run.runner.recorded_config`)."""
        return dataclasses.asdict(self)


def _check_choices(c: BenchConfig) -> None:
    for name, allowed in (("case", CASES), ("model", MODELS), ("accelerator", ACCELERATORS),
                          ("precision", PRECISIONS), ("preset", tuple(PRESETS)), ("data_path", DATA_PATHS),
                          ("scaling", SCALINGS)):
        if getattr(c, name) not in allowed:
            raise ConfigError(f"{option_for(name)} {getattr(c, name)!r} is not one of {', '.join(allowed)}")
    if not c.data:
        raise ConfigError(f"no data set given: pass --data PATH (or 'synthetic'), or set {DATA_ENV}")
    if not str(c.out_dir).strip():  # "" would be the current folder: a slip, not a choice
        raise ConfigError("--out is empty: name the folder for the results, e.g. --out runs")


def _check_ranges(c: BenchConfig) -> None:
    positive = ("global_batch_size", "eval_batch_size", "devices", "num_nodes")
    for name in positive:
        if getattr(c, name) < 1:
            raise ConfigError(f"{option_for(name)} must be >= 1, got {getattr(c, name)}")
    for name in ("train_samples", "test_samples"):
        if 0 < getattr(c, name) < 10:  # (CIFAR-10's classes)
            raise ConfigError(f"{option_for(name)} must be 0 (all) or >= 10: a class-balanced subset needs one "
                              f"image per class, got {getattr(c, name)}")
    for name in ("epochs", "train_samples", "test_samples", "val_every_n_epochs", "seed"):
        if getattr(c, name) < 0:
            raise ConfigError(f"{option_for(name)} must be >= 0, got {getattr(c, name)}")
    if c.num_workers < -1:
        raise ConfigError(f"--num-workers must be >= 0, or -1 for auto; got {c.num_workers}")
    _check_optimizer(c)
    if not 0.0 <= c.accuracy_floor <= 1.0:
        raise ConfigError(f"--accuracy-floor is a fraction in [0, 1], got {c.accuracy_floor}")
    _check_profile(c)
    _check_loader(c)
    _check_files(c)
    if not 0 < c.pg_timeout_s <= MAX_PG_TIMEOUT_S:  # (nan fails too) torch keeps it as int milliseconds
        raise ConfigError(f"--pg-timeout-s must be > 0 and <= {MAX_PG_TIMEOUT_S:.0f} seconds (a week), "
                          f"got {c.pg_timeout_s}")
    if c.accelerator == "cpu" and c.precision == "16-mixed":
        raise ConfigError("--precision 16-mixed needs a GPU; use 32-true or bf16-mixed on CPU")


def _check_optimizer(c: BenchConfig) -> None:
    # each value on its own, so that the message names the one that is wrong (nan and inf fail too)
    if not (math.isfinite(c.lr) and c.lr > 0):
        raise ConfigError(f"--lr must be a finite number > 0, got {c.lr}")
    if not 0 <= c.momentum < 1:
        raise ConfigError(f"--momentum must be >= 0 and < 1, got {c.momentum}")
    if not (math.isfinite(c.weight_decay) and c.weight_decay >= 0):
        raise ConfigError(f"--weight-decay must be a finite number >= 0, got {c.weight_decay}")


def _check_profile(c: BenchConfig) -> None:
    if c.profile_wait < 0 or c.profile_warmup < 1 or c.profile_active < 1:
        raise ConfigError(f"the profiler window needs --profile-wait >= 0, --profile-warmup >= 1 (tracing start-up "
                          f"costs land in the first traced step) and --profile-active >= 1; got {c.profile_wait}, "
                          f"{c.profile_warmup} and {c.profile_active}")
    if c.profile and c.epochs == 0:
        raise ConfigError("--profile traces training steps: use --epochs >= 1")
    if c.profile and c.train_samples and -(-c.train_samples // c.global_batch_size) * c.epochs < 2:
        raise ConfigError("--profile needs at least 2 training steps (1 warm-up, 1 recorded): raise "
                          "--train-samples or --epochs, or lower --global-batch-size")


def _check_files(c: BenchConfig) -> None:
    # files named by options, checked before anything starts (not after the Trainer or the data is set up)
    if c.data_checksums not in ("official", "skip") and not Path(c.data_checksums).expanduser().is_file():
        raise ConfigError(f"--data-checksums {c.data_checksums!r}: give official, skip, or a JSON file "
                          "{file name: md5} that exists")
    if c.init_weights and not Path(c.init_weights).expanduser().is_file():
        raise ConfigError(f"--init-weights {c.init_weights}: no such file; give a state_dict file written by "
                          "--save-weights, or leave it out for seeded weights")


def _check_loader(c: BenchConfig) -> None:
    if c.persistent_workers and c.num_workers == 0:
        raise ConfigError("--persistent-workers needs --num-workers > 0")
    if c.data_path == "device" and c.num_workers > 0:
        raise ConfigError("--data-path device gathers batches on the device and needs no loader workers; "
                          "use --num-workers 0 or -1")
    if c.data_path == "device" and (c.pin_memory or c.persistent_workers):
        raise ConfigError("--data-path device has no loader workers and copies the training set once: drop "
                          "--pin-memory and --persistent-workers")


def _check_world(c: BenchConfig) -> None:
    if c.case == "baseline" and (c.devices != 1 or c.num_nodes != 1):
        raise ConfigError("case baseline runs on exactly one device: use --devices 1 --num-nodes 1")
    if c.case == "dp":
        if c.num_nodes != 1:
            raise ConfigError("case dp drives the GPUs of one node: DataParallel cannot span nodes")
        if c.accelerator != "gpu":
            raise ConfigError("case dp needs --accelerator gpu (DataParallel splits batches over GPUs)")
        if c.compile:  # nn.Module.compile keeps a bound method of the original in __dict__, which replicas copy
            raise ConfigError("--compile with case dp is refused: DataParallel's replicas would all run the original "
                              "module's compiled forward (GPU 0's weights); use --case ddp --compile, or dp without it")
        if c.channels_last:  # replicate()'s broadcast_coalesced flattens the weights: replicas 1..N get NCHW
            raise ConfigError("--channels-last with case dp is refused: DataParallel's replicas on GPUs 1..N get "
                              "plain NCHW weights (a layout conversion every step); use --case ddp --channels-last")
        if c.sync_batchnorm:
            raise ConfigError("--sync-batchnorm needs ddp: DataParallel replicas cannot share BatchNorm statistics "
                              "(SyncBatchNorm works only under DistributedDataParallel); use --case ddp or drop it")
    if c.sync_batchnorm and c.accelerator != "gpu":
        raise ConfigError("--sync-batchnorm needs --accelerator gpu: torch's SyncBatchNorm runs only on GPUs; "
                          "drop --sync-batchnorm on CPU")
    if c.global_batch_size % c.data_parallel_size:
        raise ConfigError(
            f"--global-batch-size {c.global_batch_size} is not divisible by the {c.data_parallel_size} "
            f"data-parallel devices; choose a multiple of {c.data_parallel_size}")


# Preset values. Times and accuracies measured on the machines named in README.md ("Presets").
PRESETS: dict[str, dict[str, Any]] = {
    # A few thousand images, one epoch: checks the whole path end to end on 2 CPU cores.
    # (no interconnect check: its seconds would be a large share of a smoke run; `cifar-bench comm` is that check)
    "smoke": dict(train_samples=10000, test_samples=2000, epochs=1, global_batch_size=64,
                  eval_batch_size=500, lr=0.02, accelerator="cpu", comm_check=False),
    # The real data set, sized for the main job on 2 CPU cores (baseline + ddp in < 3 min).
    "cpu": dict(train_samples=0, test_samples=0, epochs=2, global_batch_size=64,
                eval_batch_size=1000, lr=0.02, accelerator="cpu",
                accuracy_floor=0.40),
    # The whole data set on GPUs, enough epochs for a meaningful accuracy.
    "full": dict(train_samples=0, test_samples=0, epochs=20, global_batch_size=256,
                 eval_batch_size=1000, lr=0.05, accelerator="gpu",
                 pin_memory=True, persistent_workers=True, accuracy_floor=0.60),
}


assert tuple(PRESETS) == PRESET_NAMES, "PRESET_NAMES lists the presets"


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


def weak_overrides(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config overrides of a weak-scaling point, from the 1-device values they give.

    ``global_batch_size``, ``train_samples`` and ``lr`` (given, else the preset's) are read as the
    1-device point's (images per step, images per epoch, learning rate); for N data-parallel devices
    (ddp: devices x num_nodes, dp: devices, baseline: 1) they become ``B x N``, ``S x N`` and
    ``lr x N`` (:data:`bench.scaling.figures.LR_RULE`), so the per-device batch (B) and the optimizer steps per epoch
    (ceil(S / B)) are those of the 1-device point. Overrides without ``scaling="weak"`` are
    returned unchanged.

    Raises:
        ConfigError: weak scaling without ``train_samples`` (all images cannot grow with N), or an
            invalid 1-device config.
    """
    if overrides.get("scaling") != "weak":
        return overrides
    one = make_config(preset, **{**overrides, "devices": 1, "num_nodes": 1})  # validates the 1-device values
    if one.train_samples <= 0:
        raise ConfigError("weak scaling grows the images per epoch with the devices: give --train-samples, "
                          "the training images of the 1-device point (e.g. 10000)")
    devices, nodes = overrides.get("devices") or 1, overrides.get("num_nodes") or 1
    n = devices * nodes if one.case == "ddp" else devices if one.case == "dp" else 1
    return {**overrides, "global_batch_size": one.global_batch_size * n, "train_samples": one.train_samples * n,
            "lr": one.lr * n}
