"""The run's instruments as one Lightning callback (bench.run.instruments.CallbackGroup)."""

from __future__ import annotations

import lightning as L

from bench.run.instruments import HOOKS, CallbackGroup, overrides


class _Start(L.Callback):
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def on_train_start(self, trainer, pl_module) -> None:
        self.calls.append(("start", "first"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.calls.append(("batch_end", batch_idx, "first"))


class _End(L.Callback):
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.calls.append(("batch_end", batch_idx, "second"))


def test_each_hook_calls_the_members_that_override_it_in_order_with_its_arguments():
    calls: list = []
    group = CallbackGroup([_Start(calls), _End(calls)])
    group.on_train_start("trainer", "module")
    group.on_train_batch_end("trainer", "module", None, None, 7)
    group.on_before_backward("trainer", "module", "loss")  # overridden by neither: nothing to call
    assert calls == [("start", "first"), ("batch_end", 7, "first"), ("batch_end", 7, "second")]
    assert [len(group._calls[h]) for h in ("on_train_start", "on_train_batch_end", "on_before_backward")] == [1, 2, 0]


def test_every_hook_of_lightnings_callback_is_forwarded():
    assert {"setup", "teardown", "on_train_batch_start", "on_before_optimizer_step", "on_exception"} <= set(HOOKS)
    group = CallbackGroup([])
    assert all(overrides(group, hook) for hook in HOOKS)  # Lightning would otherwise call its no-op
