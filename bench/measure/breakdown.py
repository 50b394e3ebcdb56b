"""Where a training step's time goes, per rank, without torch.profiler: data, compute, all-reduce.

Every training step of every rank is cut into consecutive intervals (seconds). On CPU the time
stamps are host clock readings (``time.perf_counter``). On GPU they are CUDA events recorded on
the current stream, read once per epoch after a single synchronisation (:class:`EventClock`):
the step boundaries are where the *device* got to them, and nothing synchronises per step, so the
breakdown costs the launch of a few events per step. The data actions are always timed on the
host (the loader runs there); on GPU ``data_wait_s`` is that host time clipped to the device's gap
between two steps, so a fetch hidden behind queued GPU work counts as no wait:

* ``data_wait_s``: fetching the next batch from the DataLoader, moving it to the device and the
  batch hooks (normalisation, the device data path's augmentation), measured through Lightning's
  profiler actions ``[_TrainingEpochLoop].train_dataloader_next``,
  ``[Strategy]*.batch_to_device`` and ``[LightningModule]*.on_before_batch_transfer``.
* ``loop_overhead_s``: the rest of the time between two steps: Lightning's bookkeeping and
  logging and, with several ranks, posting the SIGTERM flag's non-blocking all-reduce
  (:mod:`bench.run.stopping`; Lightning's own per-step broadcast, a blocking collective, is replaced).
* ``forward_s``: ``on_train_batch_start`` to ``on_before_backward``: training_step up to its
  ``manual_backward`` (the forward pass, the loss, the training counts) and zero_grad.
* ``allreduce_s``: the *exposed* gradient all-reduce of DDP: from the hand-over of the last
  gradient bucket to the DDP communication hook (the backward computation is complete: on GPU
  an event on the compute stream marks it) to ``on_after_backward`` (DDP waited for every bucket).
  All-reduce overlapped with the backward computation costs no step time and is not in it. Zero
  without DDP.
* ``backward_s``: ``on_before_backward`` to ``on_after_backward``, less ``allreduce_s``.
* ``optimizer_s``: ``on_before_optimizer_step`` to ``on_train_batch_end``.
* ``step_s``: end of the previous step (or the epoch start) to the end of this one;
  ``unattributed_s`` is what the intervals above do not cover (e.g. between backward and the
  optimizer hook).

``compute_s`` = forward + backward + optimizer. The all-reduce goes through torch's
``default_hooks.allreduce_hook`` (the same arithmetic as DDP's built-in all-reduce: sum, then
divide by the world size), wrapped to take the time stamp.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.profilers import Profiler
try:  # a non-public torch module (the GPU check names it): without it, no all-reduce time stamp, no failure
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
except ImportError:
    allreduce_hook = None
from torch.nn.parallel import DistributedDataParallel

from bench.measure.steptable import PARTS, case_breakdown, format_breakdown, markdown_breakdown, rank_breakdowns  # noqa: F401,E402 (its tables, torch-free)
DETAIL = ("forward_s", "backward_s", "optimizer_s", "unattributed_s", "step_s")
_MARKS = ("prev_end", "start", "before_backward", "after_backward", "before_optimizer", "end")
# Lightning profiler actions (outermost ones only) that move a training batch from the loader to the device
_DATA_ACTIONS = ("].train_dataloader_next", ".batch_to_device", ".on_before_batch_transfer")
_UNTIMED = contextlib.nullcontext()  # reusable and reentrant: one for every untimed action


class HostClock:
    """Host time stamps (``time.perf_counter``, s): :meth:`mark` is already the reading."""

    kind = "host"

    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, marks: list) -> list[float]:
        """The marks as seconds (the same numbers)."""
        return list(marks)


class EventClock:
    """Device time stamps: CUDA events recorded on the current stream, resolved once per batch of marks.

    :meth:`mark` records an event (a few microseconds of launch, no synchronisation);
    :meth:`seconds` synchronises the device once and returns each mark's time in seconds from the
    first one (``Event.elapsed_time``, ms, resolution about 0.5 us). ``event`` and ``synchronize``
    are injectable so the logic can be tested without a GPU.
    """

    kind = "cuda_events"

    def __init__(self, device: torch.device, event=None, synchronize=None) -> None:
        self.device = device
        self._event = event or (lambda: torch.cuda.Event(enable_timing=True))
        self._synchronize = synchronize or torch.cuda.synchronize

    def mark(self):
        e = self._event()
        e.record()
        return e

    def seconds(self, marks: list) -> list[float]:
        if not marks:
            return []
        self._synchronize(self.device)
        return [marks[0].elapsed_time(m) / 1000.0 for m in marks]


def clock_for(device: torch.device):
    """:class:`EventClock` on a CUDA device, else :class:`HostClock`."""
    return EventClock(device) if device.type == "cuda" else HostClock()


class DataActionClock(Profiler):
    """A Lightning profiler that only sums the host time of the batch-loading actions (see module docstring).

    Attributes:
        pending: seconds of data actions since the last :meth:`take`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0.0
        self._open: dict[str, float] = {}
        self._is_data: dict[str, bool] = {}  # action name -> a data action? (Lightning calls ~30 actions a step)

    def _is_data_action(self, action_name: str) -> bool:
        is_data = self._is_data.get(action_name)
        if is_data is None:
            is_data = self._is_data[action_name] = action_name.startswith(
                ("[_TrainingEpochLoop]", "[Strategy]", "[LightningModule]")) and action_name.endswith(_DATA_ACTIONS)
        return is_data

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        """The context Lightning enters around an action: Lightning's own (start, stop) for a data action,
        else one shared context that does nothing.

        Lightning wraps ~24 hook calls a training step in ``profile``; its generator-based context costs
        ~1.1 us a call on CPU against ~0.2 us for the shared one (timeit, 2026-11-30), ~20 us a step."""
        return super().profile(action_name) if self._is_data_action(action_name) else _UNTIMED

    def start(self, action_name: str) -> None:
        if self._is_data_action(action_name):
            self._open[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        began = self._open.pop(action_name, None)
        if began is not None:
            self.pending += time.perf_counter() - began

    def take(self) -> float:
        """The data seconds gathered since the last call, and start again from zero."""
        taken, self.pending = self.pending, 0.0
        return taken

    def summary(self) -> str:
        return ""  # nothing to print at teardown: the figures go to the run's JSON


class AllReduceTimes:
    """State of :func:`timed_allreduce`: when the last gradient bucket of the step was handed over
    (a mark of ``clock``, which :class:`StepBreakdown` sets at the start of training)."""

    def __init__(self) -> None:
        self.clock, self.last_bucket = HostClock(), None


def timed_allreduce(state: AllReduceTimes, bucket):  # no annotations: DDP compares them to real types,
    # and this module's postponed annotations (strings) would fail that check
    """DDP communication hook: torch's ``allreduce_hook``, time-stamping the hand-over of the last bucket.

    Returns ``torch.futures.Future[torch.Tensor]``: the bucket's gradients averaged over the ranks.
    """
    if bucket.is_last():  # DDP hands over the bucket of the first layers last: backward is done
        # on GPU an event on the compute stream: earlier buckets' all-reduces may still run (exposed time)
        state.last_bucket = state.clock.mark()
    return allreduce_hook(None, bucket)


def step_parts(marks: dict[str, float], data_s: float, last_bucket: float | None) -> dict[str, float]:
    """One step's intervals in seconds (see the module docstring) from its time stamps (s).

    Args:
        marks: time stamps named as in ``_MARKS``. data_s: seconds of data actions before the step.
        last_bucket: time stamp of the last bucket's hand-over, or None (no DDP).
    """
    between = lambda a, b: max(0.0, marks[b] - marks[a])  # noqa: E731
    backward = between("before_backward", "after_backward")
    exposed = 0.0 if last_bucket is None else min(backward, max(0.0, marks["after_backward"] - last_bucket))
    before = between("prev_end", "start")
    data = min(data_s, before)
    parts = {"data_wait_s": data, "loop_overhead_s": before - data, "forward_s": between("start", "before_backward"),
             "backward_s": backward - exposed, "allreduce_s": exposed,
             "optimizer_s": between("before_optimizer", "end"), "step_s": between("prev_end", "end")}
    parts["compute_s"] = parts["forward_s"] + parts["backward_s"] + parts["optimizer_s"]
    parts["unattributed_s"] = parts["step_s"] - sum(parts[k] for k in PARTS)
    return parts


def summarize(steps: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per interval: median, p90 (numpy's linear interpolation), mean and sum over the steps, in seconds.

    Args:
        steps: one dict per step with the keys of :data:`PARTS` and :data:`DETAIL` (seconds).

    Raises:
        ValueError: no steps.
    """
    if not steps:
        raise ValueError("no training steps to summarise")
    out = {}
    for key in PARTS + DETAIL:
        values = np.array([s[key] for s in steps], dtype=float)
        out[key] = {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
                    "mean": float(values.mean()), "sum": float(values.sum())}
    return out


class StepBreakdown(L.Callback):
    """Records every training step's intervals on this rank; :attr:`epochs` holds one summary per epoch.

    Pass :attr:`actions` as the Trainer's ``profiler`` (it times the batch-loading actions). Each
    step keeps its raw marks (host seconds, or CUDA events on GPU); they are turned into seconds
    once, when the epoch's last step ends (:meth:`_close_epoch`: one device synchronisation on GPU).

    Attributes:
        epochs: list of ``{"epoch": int, "steps": int, "clock": "host" | "cuda_events",
            <interval>: {median, p90, mean, sum}}`` (s).
        comm_hook: description of the DDP communication hook installed, or None (no DDP).
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.comm_hook: str | None = None
        self.actions = DataActionClock()
        self._clock = HostClock()
        self._allreduce = AllReduceTimes()
        self._steps: list[tuple[dict, float, Any]] = []  # (marks, data seconds, last-bucket mark or None)
        self._marks: dict[str, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock = self._allreduce.clock = clock_for(trainer.strategy.root_device)
        model = trainer.strategy.model
        if isinstance(model, DistributedDataParallel) and self.comm_hook is None and allreduce_hook is not None:
            model.register_comm_hook(self._allreduce, timed_allreduce)
            self.comm_hook = "bench.measure.breakdown.timed_allreduce (torch default_hooks.allreduce_hook + time stamp)"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps, self._marks = [], {"prev_end": self._clock.mark()}
        self.actions.take()  # loading before the epoch (the first batch's prefetch is not a step's)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._allreduce.last_bucket = None
        self._marks["start"] = self._clock.mark()
        self._marks["data_s"] = self.actions.take()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._marks["before_backward"] = self._clock.mark()

    def on_after_backward(self, trainer, pl_module) -> None:
        self._marks["after_backward"] = self._clock.mark()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._marks["before_optimizer"] = self._clock.mark()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        end = self._clock.mark()
        self._marks["end"] = end
        if all(k in self._marks for k in _MARKS):  # (a step skipped by training_step has no backward marks)
            self._steps.append((self._marks, self._marks["data_s"], self._allreduce.last_bucket))
        self._marks = {"prev_end": end}
        if batch_idx == trainer.num_training_batches - 1:
            self._close_epoch(trainer)

    def _close_epoch(self, trainer: L.Trainer) -> None:
        if not self._steps:
            return
        steps = resolve_steps(self._clock, self._steps)
        self.epochs.append({"epoch": trainer.current_epoch, "steps": len(steps), "clock": self._clock.kind,
                            **summarize(steps)})
        self._steps = []
        medians = {f"breakdown/{k[:-2]}_ms": 1000 * self.epochs[-1][k]["median"] for k in PARTS + ("step_s",)}
        for logger in trainer.loggers:  # rank 0's own steps (loggers write on rank 0 only)
            logger.log_metrics(medians, step=trainer.current_epoch)


def resolve_steps(clock, raw: list[tuple[dict, float, Any]]) -> list[dict[str, float]]:
    """Each step's intervals (:func:`step_parts`) from its raw marks, resolved by ``clock`` in one call.

    Args:
        clock: :class:`HostClock` or :class:`EventClock` (whose marks the steps hold).
        raw: per step ``(marks named as in _MARKS, data seconds, last-bucket mark or None)``.
    """
    flat = [m for marks, _, bucket in raw for m in [marks[k] for k in _MARKS] + ([bucket] if bucket is not None else [])]
    seconds = iter(clock.seconds(flat))
    steps = []
    for marks, data_s, bucket in raw:
        stamps = {k: next(seconds) for k in _MARKS}
        steps.append(step_parts(stamps, data_s, next(seconds) if bucket is not None else None))
    return steps
