"""Stopping every rank on SIGTERM at the same step, without a per-step synchronisation.

Lightning 2.6 (``lightning.pytorch.loops.training_epoch_loop._TrainingEpochLoop._broadcast_sigterm_tensor``)
broadcasts a SIGTERM flag from rank 0 on the training device and reads it back with ``.item()`` at the
start of every training step when the world size is above 1: on a GPU one host-device synchronisation a
step, in ddp only, which keeps the host from running ahead of the device. Its SIGTERM handler
(``_SignalConnector._sigterm_notifier_fn``) also calls ``dist.broadcast`` from inside the signal handler,
and each rank that got the signal stops on its own at the end of a step (``on_advance_end``), so a signal
to one rank > 0 alone left the others waiting in the next gradient all-reduce.

:class:`AgreedStop` (a callback, every rank) replaces both on the run's own Trainer instance (no other
Trainer is touched):

* the handler only sets this rank's flag (no collective inside a signal handler);
* at the start of every training step each rank posts its flag to a non-blocking all-reduce (MAX) on a
  side gloo group of CPU tensors (``async_op=True``), and takes the result of the one it posted
  :data:`LAG_STEPS` steps earlier. Every rank takes the result of the same all-reduce at the same step,
  so all stop together, at most ``LAG_STEPS + 1`` steps after the signal. By then the others posted it
  long ago (the gradient all-reduce of the steps between keeps ranks within a step of each other), so
  the wait is for a few bytes already on the wire, on the host only: the flag lives in a NumPy buffer
  shared with the CPU tensor and is read without touching the device.
* the all-reduces still in flight are waited for when the fit ends (and before a stop), and a stop
  agreed in the last steps is raised then, so none is lost.

A SIGTERM outside the fit (set-up, the test pass) or with one rank behaves as Lightning's own handler
does, less the broadcast. :func:`check_lightning` is what a Lightning upgrade must pass
(``tests/test_stopping.py``). Sources: Lightning 2.6.6 ``loops/training_epoch_loop.py``,
``trainer/connectors/signal_connector.py``; torch.distributed ``all_reduce(async_op=True)``.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections import deque

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

LAG_STEPS = 2  # steps between posting a flag and reading the agreed one: the bound on stop latency, + 1 (steps)
log = logging.getLogger(__name__)

#: The Lightning methods replaced on the run's Trainer, with the SHA-256 of their source in the Lightning
#: release this was written against: a change there must be read before this module is trusted again.
PATCHED = {
    "lightning.pytorch.loops.training_epoch_loop._TrainingEpochLoop._broadcast_sigterm_tensor":
        "d4e504c3f7d8bcb54e4bd1c0689e6deedb222e676161d4da2f3ba55a4549da78",
    "lightning.pytorch.trainer.connectors.signal_connector._SignalConnector._sigterm_notifier_fn":
        "5f73424dfc7ee25a516a0b4cc29e5872550ea2f9b90490f508e6493364d4665b",
}
#: Where Lightning calls them (method: text its source must contain): else the replacement is never called.
CALL_SITES = {
    "lightning.pytorch.loops.training_epoch_loop._TrainingEpochLoop.advance": "self._broadcast_sigterm_tensor()",
    "lightning.pytorch.trainer.connectors.signal_connector._SignalConnector.register_signal_handlers":
        "[self._sigterm_notifier_fn]",
}


def _resolve(dotted: str):
    """The object at ``package.module.Class.method`` (ImportError/AttributeError when gone)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = __import__(".".join(parts[:cut]), fromlist=["_"])
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def source_digest(fn) -> str:
    """SHA-256 (hex) of a function's source text."""
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()


def check_lightning() -> list[str]:
    """What changed in the patched Lightning methods since :data:`PATCHED` was written: one line per
    method gone or whose source differs; [] when all are as expected."""
    changed = []
    for dotted, digest in PATCHED.items():
        try:
            fn = _resolve(dotted)
        except (ImportError, AttributeError):
            changed.append(f"{dotted}: gone")
            continue
        if source_digest(fn) != digest:
            changed.append(f"{dotted}: source changed (sha256 {source_digest(fn)[:12]}..., expected {digest[:12]}...)")
    for dotted, text in CALL_SITES.items():
        try:
            if text not in inspect.getsource(_resolve(dotted)):
                changed.append(f"{dotted}: no longer calls {text}")
        except (ImportError, AttributeError):
            changed.append(f"{dotted}: gone")
    return changed


class AgreedStop(L.Callback):
    """Every rank: SIGTERM stops all ranks at the same training step, with no per-step wait (see module).

    Attributes:
        local: this rank received SIGTERM (bool); stopped_at: the global step at which all stopped, or None.
    """

    def __init__(self, lag_steps: int = LAG_STEPS) -> None:
        self.lag_steps, self.local, self.stopped_at = lag_steps, False, None
        self._trainer, self._group, self._pending, self._lightning_poll = None, None, deque(), None

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        # before Lightning registers its SIGTERM handler (Trainer._run): the handler it registers is ours
        self._trainer = trainer
        connector, loop = getattr(trainer, "_signal_connector", None), getattr(trainer.fit_loop, "epoch_loop", None)
        if connector is None or not hasattr(loop, "_broadcast_sigterm_tensor"):
            return  # another Lightning (e.g. a lent GPU machine's own): its own behaviour; check_lightning says so
        connector._sigterm_notifier_fn = self._notify
        if self._lightning_poll is None:  # (setup runs again for the test pass: the first is Lightning's own)
            self._lightning_poll = loop._broadcast_sigterm_tensor
        loop._broadcast_sigterm_tensor = self._poll

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if self._lightning_poll is None or trainer.world_size < 2 or self._group is not None:
            return
        if dist.is_available() and dist.is_initialized():
            try:  # collective: every rank creates it here. gloo must reach the other nodes (GLOO_SOCKET_IFNAME)
                self._group = dist.new_group(backend="gloo")
            except Exception as err:  # noqa: BLE001 (no side group: Lightning's own per-step broadcast, said)
                print(f"cifar-bench: rank {trainer.global_rank}: no gloo group for the SIGTERM flag ({err}); "
                      "Lightning's per-step broadcast stays (one host-device sync a step on GPUs)", flush=True)
                trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = self._lightning_poll

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        agreed = self._drain()
        self._group = None  # the test pass: Lightning's own behaviour (less the broadcast)
        if agreed is not None:
            self._stop(trainer, agreed)

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._group = None

    def _notify(self, signum, frame) -> None:
        """The SIGTERM handler: in a multi-rank fit only this rank's flag; otherwise Lightning's (forward the
        signal to the ranks this process launched, then stop at the end of the step)."""
        log.info(f"rank {self._trainer.global_rank} received SIGTERM ({signum})")
        self.local = True
        if self._group is None:
            connector = self._trainer._signal_connector
            launcher = self._trainer.strategy.launcher
            if not connector.received_sigterm and launcher is not None:
                launcher.kill(signum)
            connector.received_sigterm = True

    def _poll(self) -> None:
        """Replaces Lightning's per-step broadcast (start of each training step, world size > 1)."""
        if self._group is None:
            return
        flags = np.zeros(self._trainer.world_size, dtype=np.int32)  # one entry a rank: who got the signal
        flags[self._trainer.global_rank] = int(self.local)
        work = dist.all_reduce(torch.from_numpy(flags), op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        self._pending.append((work, flags))
        if len(self._pending) > self.lag_steps:
            work, flags = self._pending.popleft()
            work.wait()
            if flags.any():  # agreed by every rank at this same step
                self._drain(flags)
                self._stop(self._trainer, flags)

    def _drain(self, seen: np.ndarray | None = None) -> np.ndarray | None:
        """Wait for every all-reduce in flight (all ranks posted the same ones). Returns the ranks' flags
        (``seen`` or'ed with those in flight) when any rank got the signal, else None."""
        while self._pending:
            work, flags = self._pending.popleft()
            work.wait()
            seen = flags if seen is None else seen | flags
        return seen if seen is not None and seen.any() else None

    def _stop(self, trainer: L.Trainer, flags: np.ndarray) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        self.stopped_at, self._group = trainer.global_step, None
        trainer._signal_connector.received_sigterm = True
        raise SIGTERMException(received_by(flags))


def received_by(flags) -> str:
    """``"received by rank 1"`` / ``"received by ranks 0, 3"`` from the ranks' flags (one entry a rank)."""
    ranks = [int(r) for r in np.flatnonzero(flags)]
    return f"received by rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
