"""Host synchronisations per step, counted inside a real Lightning fit and test pass (the GPU check's probe).

    python -m bench.selfcheck.syncprobe --out DIR [--cpu]     # writes DIR/syncprobe.json, exit 0/1

Two counts over the same window:

* ``host_reads``: calls that read tensor values to the host (:class:`bench.measure.hostsync.HostReadCounter`);
  the same on CPU and GPU, so a CPU run already shows them.
* ``cuda_syncs``: the synchronisations torch itself reports under ``torch.cuda.set_sync_debug_mode("warn")``
  (one warning each): the real number on a GPU, None on the CPU.

On a GPU the training window is :data:`TRAIN_STEPS` whole loop iterations (each from the end of the
step before to the end of its own: data fetch, transfer, batch hooks, forward, backward, optimizer),
after the warm-up, and host reads count only tensors off the CPU; on the CPU it is the steps proper
(the loader's augmentation reads its own CPU tensors, 3 an image, which wait for no GPU); the test window is the whole test pass but the epoch-end ``compute()`` (one all-gather and
read a pass, not per step). Expected: training 0 a step (1 on the steps that log the loss, every
``log_every_n_steps``), test 0 a pass (issue 31 item 4: torchmetrics' NaN check made it 2 a step).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

FIRST_STEP = 12  # after the timing warm-up (5 steps) and away from the loss-logging steps (every 10th)
TRAIN_STEPS = 6  # steps counted (12..17: no loss logged on these: Lightning's log_every_n_steps is 10)


def probe_config(cpu: bool, out_dir: str):
    """The probe's run: the smoke (CPU) or full (GPU) preset's batch, FIRST_STEP + TRAIN_STEPS + 2 steps."""
    from bench.core.config import make_config

    preset, batch = ("smoke", 64) if cpu else ("full", 256)
    return make_config(preset, data="synthetic", train_samples=(FIRST_STEP + TRAIN_STEPS + 2) * batch,
                       test_samples=2000, epochs=1, global_batch_size=batch,
                       data_path="uint8" if cpu else "device", num_workers=0, out_dir=out_dir)


def probe(cpu: bool, out_dir: str) -> dict:
    """A 1-epoch fit (20 steps of the preset's batch, synthetic data) and a test pass; the counts.

    Returns:
        ``{"train": {"steps", "host_reads", "cuda_syncs", "by_name"}, "test": {...}}`` (counts per window).
    """
    import lightning as L
    import torch

    from bench.data.datamodule import CifarDataModule
    from bench.measure.hostsync import HostReadCounter
    from bench.run import training
    from bench.run.model import apply_device_settings

    class SyncCounter(L.Callback):
        def __init__(self) -> None:
            self.windows: dict[str, dict] = {}
            self._open: tuple | None = None

        def _begin(self, phase: str) -> None:
            reads = HostReadCounter(device_only=not cpu)
            reads.__enter__()
            caught = warnings.catch_warnings(record=True)
            log = caught.__enter__()
            warnings.simplefilter("always")  # every sync, not once per call site
            if torch.cuda.is_available() and not cpu:
                torch.cuda.set_sync_debug_mode("warn")
            self._open = (phase, reads, caught, log)

        def _end(self, steps: int) -> None:
            phase, reads, caught, log = self._open
            if torch.cuda.is_available() and not cpu:
                torch.cuda.set_sync_debug_mode(0)
            caught.__exit__(None, None, None)
            reads.__exit__(None, None, None)
            syncs = sum("synchroniz" in str(w.message) for w in log) if not cpu else None
            window = self.windows.setdefault(phase, {"steps": 0, "host_reads": 0, "cuda_syncs": syncs and 0,
                                                     "by_name": {}})
            window["steps"] += steps
            window["host_reads"] += reads.total
            window["cuda_syncs"] = None if syncs is None else (window["cuda_syncs"] or 0) + syncs
            for name, n in reads.by_name.items():
                window["by_name"][name] = window["by_name"].get(name, 0) + n
            self._open = None

        # GPU: whole loop iterations (a CPU tensor's read there waits for nothing: not counted); CPU: the step
        # proper, from after the batch's transfer (the loader's host-side augmentation reads its CPU tensors)
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if cpu and FIRST_STEP <= batch_idx < FIRST_STEP + TRAIN_STEPS:
                self._begin("train")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self._open:
                self._end(1)
            if not cpu and FIRST_STEP - 1 <= batch_idx < FIRST_STEP + TRAIN_STEPS - 1:
                self._begin("train")

        def on_test_epoch_start(self, trainer, pl_module) -> None:
            self._begin("test")

        def on_test_epoch_end(self, trainer, pl_module) -> None:  # (callbacks' before the module's compute)
            self._end(trainer.num_test_batches[0])

    config = probe_config(cpu, out_dir)
    apply_device_settings(config)
    counter = SyncCounter()
    trainer = training.build_trainer(config, "syncprobe", [counter])
    module, dm = training.build_module(config), CifarDataModule(config)
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    return counter.windows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.selfcheck.syncprobe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu", action="store_true", help="count on the CPU (host reads only; no CUDA syncs)")
    args = ap.parse_args(argv)
    from bench.results.resultfile import write_json_atomic

    with tempfile.TemporaryDirectory() as tmp:
        windows = probe(args.cpu, tmp)
    train, test = windows.get("train") or {}, windows.get("test") or {}
    ok = train.get("steps") == TRAIN_STEPS and test.get("steps", 0) > 0
    path = write_json_atomic({"status": "ok" if ok else "failed", "mode": "cpu" if args.cpu else "gpu", **windows},
                             args.out / "syncprobe.json")
    print(f"result: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
