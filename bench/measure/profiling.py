"""torch.profiler over a short window of training steps, one trace folder per *global* rank.

``cifar-bench run --profile`` adds :class:`StepProfiler`. It drives ``torch.profiler.profile``
itself instead of Lightning's ``PyTorchProfiler`` for two reasons: Lightning names trace files
by *local* rank, so the ranks of different nodes overwrite each other in a shared folder, and
it replaces the requested schedule on runs shorter than 5 steps. Here the window is
``wait`` steps skipped, ``warmup`` steps traced and discarded, ``active`` steps recorded
(``torch.profiler.schedule``, one cycle), shrunk visibly by :func:`fit_window` when the run has
fewer steps, and the files of global rank R go to ``<out>/profiles/<run_id>/rank<R>/``:

* ``rank<R>.<ns>.pt.trace.json``: Chrome trace (``torch.profiler.tensorboard_trace_handler``);
  opens in Perfetto (ui.perfetto.dev) and chrome://tracing, and TensorBoard's profile plugin reads
  the folder ``<out>/profiles/<run_id>`` (one run per rank).
* ``top_ops.txt`` / ``top_ops.json``: operators by self CPU time (and by self device time on GPU), whole
  names, totals over the recorded window (its steps are said in the first line: divide by them for
  a per-step time).
* ``<out>/profiles/<run_id>/top_ops.png`` (rank 0, from every rank's trace): top operators by self time
  per rank (:mod:`bench.measure.profile_chart`). docs/report.md says how the profiler's all-reduce
  time relates to the step breakdown's exposed all-reduce.

Files are written at the end of training, after the fit clock stopped. Shapes, stacks and memory
are not recorded, which keeps a trace to a few MB per rank at the default schedule. A profiled
run's times include the profiler's overhead: its result is marked ``profiled`` and
:mod:`bench.results.compare` and :mod:`bench.results.baselines` never use it as a benchmark figure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from bench.core.files import atomic_open

TOP_ROWS = 25  # operators kept in the tables


def fit_window(total_steps: int, wait: int, warmup: int, active: int) -> tuple[int, int, int]:
    """The (wait, warmup, active) window that fits a run of ``total_steps`` training steps.

    Unchanged when it fits; otherwise ``wait`` shrinks first, then ``active`` (to no fewer than
    1), then ``warmup`` (to no fewer than 1): torch.profiler's documentation advises a warm-up
    step, as tracing start-up costs land in the first traced step.

    Raises:
        ValueError: fewer than 2 training steps (1 warm-up + 1 recorded), or ``warmup`` < 1.
    """
    if warmup < 1:
        raise ValueError("the profiler window needs warmup >= 1 (start-up costs land in the first traced step)")
    if total_steps < 2:
        raise ValueError(f"the run has {total_steps} training step(s); profiling needs at least 2 "
                         "(1 warm-up, 1 recorded): raise --train-samples or --epochs")
    active = min(active, total_steps - 1)
    warmup = min(warmup, total_steps - active)
    wait = min(wait, total_steps - active - warmup)
    return wait, warmup, active


def top_operators(events, sort_key: str, rows: int = TOP_ROWS) -> list[dict[str, Any]]:
    """The ``rows`` operators with the largest ``sort_key`` from ``prof.key_averages()``.

    Returns dicts with ``name``, ``calls`` and times in microseconds: ``self_cpu_us``, ``cpu_us``
    (with children), ``self_device_us``, ``device_us``.
    """
    ranked = sorted(events, key=lambda e: getattr(e, sort_key), reverse=True)[:rows]
    return [{"name": e.key, "calls": e.count, "self_cpu_us": e.self_cpu_time_total, "cpu_us": e.cpu_time_total,
             "self_device_us": e.self_device_time_total, "device_us": e.device_time_total} for e in ranked]


def window_line(rank: int, window: dict[str, int]) -> str:
    """The first line of ``top_ops.txt``: which steps its totals cover (0-based training steps)."""
    first = window["wait"] + window["warmup"]
    return (f"rank {rank}: totals over the {window['active']} recorded training step(s) {first}.."
            f"{first + window['active'] - 1} of {window['total_steps']} (skipped {window['wait']}, warm-up "
            f"{window['warmup']}); per step = total / {window['active']}\n")


class StepProfiler(L.Callback):
    """Profiles training steps ``wait+warmup .. wait+warmup+active-1`` (0-based, over all epochs).

    Args:
        folder: the run's profile folder (``<out>/profiles/<run_id>``); rank R writes ``rank<R>/``.
        wait, warmup, active: requested schedule, in training steps.

    Attributes:
        facts: after training, this rank's ``{"rank", "requested", "schedule", "trace", "trace_bytes",
            "tables": {"txt", "json"}, "top_self_cpu": [...], "table_text"}`` (paths as strings).
    """

    def __init__(self, folder: Path, wait: int, warmup: int, active: int) -> None:
        self.folder, self.requested = Path(folder), {"wait": wait, "warmup": warmup, "active": active}
        self.facts: dict[str, Any] = {}
        self._prof: profile | None = None
        self._ready = self._cuda = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = int(trainer.num_training_batches * trainer.max_epochs)
        wait, warmup, active = fit_window(total, **self.requested)
        activities = [ProfilerActivity.CPU]
        self._cuda = trainer.strategy.root_device.type == "cuda"
        if self._cuda:
            activities.append(ProfilerActivity.CUDA)
        elif not torch.cuda.is_available():
            # a CUDA build of torch on a machine without GPU: Kineto logs "ERROR ... gpuGetDeviceCount
            # failed" although nothing failed, and "USDT: ... profiler_start/stop" (markers for USDT
            # probes, not messages for a user). Kineto's levels are VERBOSE 0 .. ERROR 4, USDT 5, so
            # only 6 drops both; without a GPU Kineto traces nothing torch does not record itself.
            # On GPU the lines stay: Kineto's errors there (CUPTI) apply. The user's value wins.
            os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        self.facts = {"rank": trainer.global_rank, "requested": self.requested,
                      "schedule": {"wait": wait, "warmup": warmup, "active": active, "total_steps": total}}
        self._prof = profile(activities=activities, schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
                             on_trace_ready=self._mark_ready, record_shapes=False, with_stack=False,
                             profile_memory=False)
        self._prof.start()

    def _mark_ready(self, prof: profile) -> None:
        self._ready = True  # written in on_train_end: exporting now would land inside the timed steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._prof is not None:
            self._prof.step()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._prof is None:
            return
        self._prof.stop()  # an unfinished active window is closed and kept
        if self._ready:
            self._write(trainer.global_rank)
        self._prof = None

    def _write(self, rank: int) -> None:
        folder = self.folder / f"rank{rank}"
        tensorboard_trace_handler(str(folder), worker_name=f"rank{rank}")(self._prof)  # (makes the folder)
        trace = max(folder.glob(f"rank{rank}.*.pt.trace.json"), key=lambda p: p.stat().st_mtime_ns)
        events = self._prof.key_averages()
        width = max((len(e.key) for e in events), default=10)  # whole names: torch cuts them at 55 characters
        text = window_line(rank, self.facts["schedule"]) + events.table(
            sort_by="self_cpu_time_total", row_limit=TOP_ROWS, max_name_column_width=width)
        tables = {"self_cpu": top_operators(events, "self_cpu_time_total")}
        if self._cuda:
            tables["self_device"] = top_operators(events, "self_device_time_total")
            text += "\n" + events.table(sort_by="self_cuda_time_total", row_limit=TOP_ROWS, max_name_column_width=width)
        with atomic_open(folder / "top_ops.txt", "w") as f:
            f.write(text)
        with atomic_open(folder / "top_ops.json", "w") as f:
            json.dump({"rank": rank, "schedule": self.facts["schedule"], "time_unit": "us", **tables}, f, indent=1)
        self.facts.update(trace=str(trace), trace_bytes=trace.stat().st_size, table_text=text,
                          tables={"txt": str(folder / "top_ops.txt"), "json": str(folder / "top_ops.json")},
                          top_self_cpu=[row["name"] for row in tables["self_cpu"][:10]])


def publish(trainer: L.Trainer, per_rank: list[dict[str, Any]], folder: Path) -> None:
    """After training, with every rank's facts: the tables to TensorBoard (:func:`log_tables`) and, on
    global rank 0, ``folder/top_ops.png`` from every rank's trace (:mod:`bench.measure.profile_chart`).
    A trace rank 0 cannot read (another node's local disk) leaves the picture out, said in one line."""
    log_tables(trainer, per_rank)
    if trainer.global_rank != 0:
        return
    from bench.measure.profile_chart import write_chart

    traces = [(f["rank"], Path(f["trace"])) for f in per_rank if f.get("trace")]
    window = (per_rank[0].get("schedule") or {}) if per_rank else {}
    title = f"{folder.name}: {len(traces)} rank(s), {window.get('active', '?')} recorded step(s)"
    try:
        chart = write_chart(traces, folder / "top_ops.png", title) if traces else None
    except (OSError, ValueError, KeyError) as err:
        print(f"profile: no top_ops.png ({err}): the traces are in {folder}", flush=True)
        return
    for f in per_rank:
        f["chart"] = str(chart) if chart else None
    if chart:
        print(f"profile: top operators by self time per rank: {chart}", flush=True)


def log_tables(trainer: L.Trainer, per_rank: list[dict[str, Any]]) -> None:
    """Every rank's self-CPU table to TensorBoard as text (tag ``profiler/rank<R>``; rank 0 writes)."""
    for logger in trainer.loggers:
        add_text = getattr(getattr(logger, "experiment", None), "add_text", None)
        for facts in per_rank:
            if add_text is not None and facts.get("table_text"):
                # four leading spaces: TensorBoard renders the text as Markdown, this keeps the columns
                body = "\n".join("    " + line for line in facts["table_text"].splitlines())
                add_text(f"profiler/rank{facts['rank']}", body, global_step=0)
