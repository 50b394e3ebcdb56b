"""Counting host reads of tensor values: the calls that make the host wait for the device on a GPU.

A value read back to Python (``Tensor.item``, ``bool(tensor)`` as in ``if t.any():``, ``tolist``,
``float``/``int``) and an operation whose output size depends on the data (``nonzero``, ``unique``,
``masked_select``) each block the host until the GPU has finished the work queued before it: one
such read per step turns the asynchronous training loop into a synchronous one. On the CPU nothing
waits, but the calls are the same, so counting them on the CPU finds the synchronisations a GPU run
will have. (On a GPU, ``torch.cuda.set_sync_debug_mode`` reports those torch itself sees: the GPU
check uses that.)

    with HostReadCounter() as reads:
        module.test_step(batch, 0)
    reads.total        # int: host reads inside the block
    reads.by_name      # {"Tensor.__bool__": 2, ...}

Source of the mechanism: torch.overrides.TorchFunctionMode (every Tensor method and torch function
goes through the mode's ``__torch_function__`` while it is active).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

Tensor = torch.Tensor

#: Tensor methods and torch functions that read a tensor's values (or data-dependent size) to the host
HOST_READS = {
    Tensor.item: "Tensor.item", Tensor.__bool__: "Tensor.__bool__", Tensor.tolist: "Tensor.tolist",
    Tensor.__float__: "Tensor.__float__", Tensor.__int__: "Tensor.__int__", Tensor.__index__: "Tensor.__index__",
    Tensor.numpy: "Tensor.numpy", Tensor.nonzero: "Tensor.nonzero", torch.nonzero: "torch.nonzero",
    Tensor.unique: "Tensor.unique", torch.unique: "torch.unique", torch.masked_select: "torch.masked_select",
    torch.equal: "torch.equal", torch.allclose: "torch.allclose", torch.is_nonzero: "torch.is_nonzero",
}
#: copies that read to the host when their source is not already there
_COPIES = {Tensor.cpu: "Tensor.cpu", Tensor.to: "Tensor.to(cpu)"}


class HostReadCounter(TorchFunctionMode):
    """A context manager counting host reads (:data:`HOST_READS`, and copies of device tensors to the CPU).

    Args:
        device_only: count only reads of tensors off the CPU (on a GPU: the reads that wait for it, not the
            data loader's host-side work on CPU tensors).

    Attributes:
        by_name: Counter of reads per function name; total: their sum (int).
    """

    def __init__(self, device_only: bool = False) -> None:
        super().__init__()
        self.device_only = device_only
        self.by_name: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = HOST_READS.get(func)
        if name is not None and self.device_only and _on_cpu(args):
            name = None
        if name is None and func in _COPIES and args and isinstance(args[0], Tensor) and args[0].device.type != "cpu":
            name = _COPIES[func] if func is Tensor.cpu or _to_cpu(args[1:], kwargs) else None
        if name is not None:
            self.by_name[name] += 1
        return func(*args, **kwargs)


def _on_cpu(args: tuple) -> bool:
    """Whether the call's first tensor argument lives on the CPU (True without a tensor argument)."""
    first = next((a for a in args if isinstance(a, Tensor)), None)
    return first is None or first.device.type == "cpu"


def _to_cpu(args: tuple, kwargs: dict) -> bool:
    """Whether ``Tensor.to(*args, **kwargs)`` names the CPU as its device."""
    target = kwargs.get("device", args[0] if args else None)
    return isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu"
