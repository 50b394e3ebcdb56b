"""The measuring callbacks of one run, handed to Lightning as one callback.

Lightning calls every hook of every callback, overridden or not, each inside a profiler context
(``lightning.pytorch.trainer.call._call_callback_hooks``): six hooks a training step, so each
callback costs the step about 6 x 2-3 us on CPU whether it does anything there or not. The run's
four instruments as separate callbacks paid that 24 times a step, three times what one callback
pays; a host-bound GPU step of well under a millisecond feels it. :class:`CallbackGroup` is one
callback whose hooks call only the members that override them, in order.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from bench.core.config import BenchConfig
from bench.measure import breakdown
from bench.measure.phases import PhaseClock
from bench.measure.profiling import StepProfiler
from bench.measure.stepreads import StepHostReads
from bench.measure.progress import EpochProgress
from bench.measure.timing import TrainingTimer
from bench.run.knobs import HOST_READS_ENV, STEP_SLEEP_ENV, StepSleep, active_knobs

# Lightning's callback hooks (setup, teardown, on_*), read from its Callback class
HOOKS = tuple(sorted(name for name in vars(L.Callback) if name.startswith("on_") or name in ("setup", "teardown")))


def overrides(callback: L.Callback, hook: str) -> bool:
    """True if ``callback``'s class defines ``hook`` other than Lightning's no-op."""
    return getattr(type(callback), hook) is not getattr(L.Callback, hook)


class CallbackGroup(L.Callback):
    """Several callbacks as one Lightning callback: each hook calls, in order, the members that override it.

    Args:
        callbacks: the members, in the order their hooks run. They keep no Lightning state of their
            own (``state_dict`` is not forwarded: the runs write no checkpoints).
    """

    def __init__(self, callbacks: list[L.Callback]) -> None:
        self.callbacks = list(callbacks)
        self._calls = {hook: [getattr(cb, hook) for cb in self.callbacks if overrides(cb, hook)] for hook in HOOKS}


def _forward(hook: str):
    def call_members(self: CallbackGroup, *args, **kwargs) -> None:
        for fn in self._calls[hook]:
            fn(*args, **kwargs)

    call_members.__name__ = call_members.__qualname__ = hook
    call_members.__doc__ = f"Lightning's ``{hook}``: the members' own, in order."
    return call_members


for _hook in HOOKS:
    setattr(CallbackGroup, _hook, _forward(_hook))


class Instruments:
    """The measuring callbacks of one run: timer, per-step breakdown, optional profiler, test knobs."""

    def __init__(self, config: BenchConfig, run_id: str, phases: PhaseClock | None = None) -> None:
        self.phases = phases or PhaseClock()  # the run's wall time in named phases (rank 0's is recorded)
        self.timer, self.breakdown, self.knobs = TrainingTimer(), breakdown.StepBreakdown(), active_knobs()
        self.profiler, self.step_breakdown = None, config.step_breakdown
        self.progress = EpochProgress(self.timer, config.case)  # one line per epoch, no per-step work
        if config.profile:
            self.profiler = StepProfiler(Path(config.out_dir) / "profiles" / run_id, config.profile_wait,
                                         config.profile_warmup, config.profile_active)

    def callbacks(self) -> list:
        """The instruments in the order their hooks must run."""
        # Order matters where hooks coincide: the knob's sleep lies inside the timed steps; the
        # breakdown marks a step's end before the timer's epoch barrier; the profiler writes last;
        # the progress line of the start is printed before the timer's first clock reading; the phase
        # marks come last (the fit window holds the timer's barriers, as fit_s does).
        knob = [StepSleep(self.knobs)] if STEP_SLEEP_ENV in self.knobs else []
        if HOST_READS_ENV in self.knobs:  # first: its counter is active for all the others' hooks
            knob.insert(0, StepHostReads(self.knobs[HOST_READS_ENV]))
        return knob + ([self.breakdown] if self.step_breakdown else []) + [self.progress, self.timer] + \
            ([self.profiler] if self.profiler else []) + [self.phases]
