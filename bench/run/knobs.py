"""Test-only knobs that really change a run, recorded in its JSON so it never passes for a real one.

``BENCH_TEST_STEP_SLEEP_S``: seconds to sleep after every training step on every rank (inside
the timed region), to produce a genuine, known slowdown for end-to-end checks of the verdicts.
``BENCH_TEST_HOST_READS_DIR``: a folder where every rank writes its host reads per training step
(:mod:`bench.measure.stepreads`; slows every torch call).
"""

from __future__ import annotations

import os
import time

import lightning as L

from bench.core.config import ConfigError

STEP_SLEEP_ENV = "BENCH_TEST_STEP_SLEEP_S"
HOST_READS_ENV = "BENCH_TEST_HOST_READS_DIR"


def active_knobs() -> dict[str, float | str]:
    """The test knobs set in the environment, by variable name (empty for a real run).

    Raises:
        ConfigError: a knob's value is not a non-negative number.
    """
    folder = os.environ.get(HOST_READS_ENV)
    return {**_step_sleep(), **({HOST_READS_ENV: folder} if folder else {})}


def _step_sleep() -> dict[str, float]:
    raw = os.environ.get(STEP_SLEEP_ENV)
    if raw in (None, ""):
        return {}
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{STEP_SLEEP_ENV}={raw!r} must be a number of seconds >= 0")
    return {STEP_SLEEP_ENV: value}


class StepSleep(L.Callback):
    """Sleeps ``knobs[BENCH_TEST_STEP_SLEEP_S]`` seconds after each training batch."""

    def __init__(self, knobs: dict[str, float]) -> None:
        self.seconds = knobs.get(STEP_SLEEP_ENV, 0.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
