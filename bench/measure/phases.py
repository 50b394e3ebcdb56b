"""A run's wall time in named phases (global rank 0's clock), adding up to ``wall_s``.

``wall_s`` (:func:`bench.measure.timing.wall_seconds`) runs from the start of the process (read from
/proc) to the moment the result's figures are assembled. :class:`PhaseClock` cuts that span into
consecutive windows at marks taken in :func:`bench.run.runner.run_case` and in Lightning's hooks, so
every second lies in exactly one window (``time.time()``, s):

==================  ================================================================================
``import_s``        process start to the start of the run: interpreter start-up, importing torch,
                    Lightning and the product, parsing the command line
``data_s``          the input checks, staging the data set and loading (or decoding once) its cache,
                    the data module's set-up
``setup_s``         the model and the Trainer: threads, Trainer and module built, loggers, watchers;
                    then, inside ``fit``, Lightning's set-up from its ``setup`` hook to
                    ``on_train_start`` (the model to the device, DDP's wrapper, optimizers, loaders)
``process_group_s`` from the call of ``fit`` to Lightning's ``setup`` hook: the other ranks started
                    (Lightning's launcher on one machine: their own start-up lies in this window)
                    and the process group's rendezvous
``interconnect_s``  the interconnect check (issue 32, ``result["interconnect"]["elapsed_s"]``),
                    which runs in the ``setup`` hook before this clock's mark: taken out of
                    ``process_group_s``; 0 where there is none
``fit_s``           ``on_train_start`` to ``on_train_end``: the training (this clock's marks;
                    ``metrics.fit_s`` is the same window between barriers)
``test_s``          ``on_train_end`` to the end of the test pass: Lightning's tear-down of the fit,
                    the profile's gathering where ``--profile``, the test pass
``gather_s``        gathering every rank's facts and assembling the figures, up to ``wall_s``
==================  ================================================================================

``remainder_s`` = ``wall_s`` - the sum: the rounding of the clocks (the process start is read in clock
ticks, 10 ms) and any window a change of the code left unmarked. Writing the result file comes after
``wall_s`` and is in neither. Sources: proc(5); Lightning 2.6 ``Trainer._run`` (``setup_environment``,
then the ``setup`` hook, then ``on_train_start``).
"""

from __future__ import annotations

import time

import lightning as L

from bench.measure.timing import process_start_time
from bench.measure.wallphases import split

#: the window from a mark to the next belongs to the phase named at the mark
_WINDOW = {"run": "data_s", "model": "setup_s", "fit_call": "process_group_s", "setup_hook": "setup_s",
           "train_start": "fit_s", "train_end": "test_s", "tested": "gather_s"}


class PhaseClock(L.Callback):
    """Marks on global rank 0's clock; also the Lightning callback that marks ``setup`` (stage fit),
    ``on_train_start`` and ``on_train_end``. ``origin``: the process start (Unix s; default from /proc)."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = process_start_time() if origin is None else origin
        self.marks: list[tuple[str, float]] = []
        self.mark("run")

    def mark(self, name: str, at: float | None = None) -> None:
        """A mark (one of ``_WINDOW``'s names) at ``at`` (Unix s, default now); a name again is ignored."""
        if name not in dict(self.marks):
            self.marks.append((name, time.time() if at is None else at))

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.mark("setup_hook")

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.mark("train_start")

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.mark("train_end")

    def record(self, wall_s: float, interconnect: dict | None) -> dict:
        """The result's ``metrics.phases`` (:func:`split`) with ``wall_s`` as the end of the last window."""
        spans = [(0.0, "import_s")] + [(at - self.origin, _WINDOW[name]) for name, at in self.marks]
        elapsed = (interconnect or {}).get("elapsed_s") if isinstance(interconnect, dict) else None
        return split(spans, wall_s, elapsed or 0.0)
