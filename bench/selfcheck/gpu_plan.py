"""The GPU check's plan: its cases, what each exercises, its time estimate on one H100-class GPU, and what
one GPU cannot show (pure data and arithmetic; :mod:`bench.selfcheck.gpu_check` runs it).

The estimate is built from fixed costs, not from CPU step times (:class:`Costs`); the plan is cut so
that its total stays within :data:`BUDGET_S` (tests/test_gpu_check.py asserts it).
"""

from __future__ import annotations

from dataclasses import dataclass

BUDGET_S = 300.0  # the whole check on one H100-class GPU (s): a lent machine's device time is minutes
EPOCHS = 2  # per case on the full preset: epoch 2 gives steady_epoch_s, epoch 0 the last batch's new shape
# The full preset's floor (0.60) is for 20 epochs. After 2 epochs (390 steps of 256, lr 0.05) the SimpleCNN
# reaches ~47 % (47.5 % measured on CPU, issue 31) and ResNet-18 more (~55-65 %); a GPU computes the same
# steps (TF32/bf16 rounding apart), so a healthy GPU lands at 45-50 %: 0.35 leaves ~10 points for seed and
# rounding, and is still 3.5x chance (0.10), which a broken data path, label shuffle or optimizer does not reach.
ACCURACY_FLOOR = 0.35

# name -> extra `bench run` options (on top of the preset, epochs, floor and data)
PLAN: dict[str, list[str]] = {
    "baseline-uint8": ["--data-path", "uint8"],
    "baseline-device": ["--data-path", "device"],
    "baseline-pil": ["--data-path", "pil"],
    "compile": ["--data-path", "device", "--compile"],
    "breakdown-off": ["--data-path", "device", "--no-step-breakdown"],  # the breakdown's cost: against baseline-device
    "resnet18-bf16-cl": ["--data-path", "device", "--model", "resnet18", "--precision", "bf16-mixed",
                         "--channels-last"],
    "ddp-1": ["--case", "ddp", "--devices", "1", "--data-path", "device"],
}
SYNC_PROBE = "sync-probe"  # python -m bench.selfcheck.syncprobe: host syncs per step (issue 31 item 4)

#: what needs two or more GPUs, and where its CPU reproduction (the proof here) lives
NOT_ON_ONE_GPU = {
    "issue 31 item 1 (dp + --compile refused)": "tests/test_dp_options.py (replica of a compiled module)",
    "issue 31 item 2 (dp + --channels-last refused)": "tests/test_dp_options.py (ATen flatten/unflatten)",
    "issue 31 item 7 (dp's /dev/shm need: global batch)": "tests/test_dp_options.py",
    "issue 16 item 1 (dp replicas' autocast dtype)": "tests/test_gpu_paths.py (replica threads on CPU)",
    "issue 16 item 4 (NCCL transport across ranks)": "ddp-1 reads one rank's back; tests/test_comm.py",
}
IMAGE_NOTE = ("this check runs the lent machine's own Python, torch, Lightning and C compiler from the source tree: "
              "it does not prove the Apptainer image (--compile in the image: issue 29)")


@dataclass(frozen=True)
class Costs:
    """Fixed costs on one H100-class GPU (s), generous: the estimate must not under-promise the budget."""

    start_s: float = 15.0  # interpreter, torch/Lightning imports, CUDA context, data cache load, Trainer set-up
    decode_s: float = 20.0  # the first case decodes the 60,000 JPEGs into the cache (~50 us each, + tar.gz)
    step_s: float = 0.005  # SimpleCNN step, full preset: host-bound (Lightning loop + kernel launches)
    resnet_step_s: float = 0.03  # ResNet-18, 256 images, bf16 channels_last: ~0.9 TFLOP a step
    compile_s: float = 90.0  # inductor: forward+backward (30-60 s) and the last batch's new shape again
    pil_epoch_s: float = 10.0  # loader workers decode and augment 50,000 PIL images an epoch
    ddp_s: float = 15.0  # the launcher's second start of the command, NCCL set-up
    probe_s: float = 20.0  # the sync probe: start, 20 steps, one test pass


TRAIN_STEPS, TEST_STEPS = 196, 10  # full preset, an epoch: 195 x 256 + 80 training images; 10 x 1000 test


def estimate_s(name: str, costs: Costs = Costs(), epochs: int = EPOCHS, first: bool = False) -> float:
    """Seconds case ``name`` should take on one H100-class GPU (pure)."""
    if name == SYNC_PROBE:
        return costs.probe_s
    extra = PLAN[name]
    steps = (TRAIN_STEPS + TEST_STEPS) * epochs
    s = costs.start_s + steps * (costs.resnet_step_s if "resnet18" in extra else costs.step_s)
    s += costs.decode_s if first else 0.0
    s += costs.compile_s if "--compile" in extra else 0.0
    s += costs.pil_epoch_s * epochs if "pil" in extra else 0.0
    s += costs.ddp_s if "ddp" in extra else 0.0
    return s


def plan_estimate(names: list[str], costs: Costs = Costs(), epochs: int = EPOCHS) -> dict[str, float]:
    """Seconds per case of a plan, in order; the first pays for decoding the data (pure)."""
    return {n: round(estimate_s(n, costs, epochs, first=i == 0), 1) for i, n in enumerate(names)}
