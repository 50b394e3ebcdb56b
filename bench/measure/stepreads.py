"""Host reads per training step of a real run (a test instrument): :class:`bench.measure.hostsync.HostReadCounter`
active from the start to the end of the fit, read at the end of every training step.

Each rank writes ``FOLDER/rank<R>.json``::

    {"rank": R, "world_size": W, "per_step": [int, ...],   # host reads between the ends of two steps
     "by_name": {"Tensor.item": n, ...},                    # over the whole fit
     "step_names": [{"Tensor.item": n, ...}, ...]}          # per step

A step's count covers everything from the end of the previous step (or the start of the fit) to the end
of this one: Lightning's loop (its per-step SIGTERM broadcast included), the data hooks, the step
itself and every callback. On the CPU it counts every read of a tensor's value, also of CPU tensors
(:class:`HostReadCounter` with ``device_only=False``): those are the calls that wait for the device when
the tensor lives on a GPU. Costly (a Python call per torch call): a test knob only
(``BENCH_TEST_HOST_READS_DIR``, :mod:`bench.run.knobs`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning as L

from bench.measure.hostsync import HostReadCounter


class StepHostReads(L.Callback):
    """Counts host reads per training step on this rank and writes them to ``folder`` at the end of the fit."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.per_step: list[int] = []
        self.step_names: list[dict[str, int]] = []
        self._counter: HostReadCounter | None = None
        self._last: Counter = Counter()

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._counter = HostReadCounter()
        self._counter.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._counter is None:
            return
        now = Counter(self._counter.by_name)
        step = now - self._last
        self.per_step.append(sum(step.values()))
        self.step_names.append(dict(step))
        self._last = now

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._finish(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._finish(trainer)

    def _finish(self, trainer: L.Trainer) -> None:
        if self._counter is None:
            return
        self._counter.__exit__(None, None, None)
        by_name, self._counter = dict(self._counter.by_name), None
        self.folder.mkdir(parents=True, exist_ok=True)
        facts = {"rank": trainer.global_rank, "world_size": trainer.world_size, "per_step": self.per_step,
                 "by_name": by_name, "step_names": self.step_names}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(facts))
