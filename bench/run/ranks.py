"""Facts gathered over the ranks after training (hostnames, parameter digests, losses) and the
process group's teardown. Every function here is a collective where it says so: every rank calls it.
"""

from __future__ import annotations

import hashlib
import socket
from typing import Any

import torch.distributed as dist
from torch import nn

from bench.run.model import CifarModule


def parameter_digest(module: nn.Module) -> str:
    """SHA-256 of all parameter values in order (bit-exact identity check across ranks)."""
    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def all_gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, ordered by global rank (just ``[obj]`` without a process group).

    Collective: every rank must call it.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, obj)
    return everyone


def gather_rank_facts(module: CifarModule, extra: dict[str, Any] | None = None) -> list[dict]:
    """Every rank's hostname, parameter digest, mean training loss of the last epoch and ``extra``.

    Collective: every rank must call it. Returns the list ordered by global rank.
    """
    steps = max(module.loss_steps, 1)
    mine = {"hostname": socket.gethostname(), "param_digest": parameter_digest(module),
            "loss_mean": float(module.loss_sum) / steps, **(extra or {})}
    return all_gather(mine)


def destroy_process_group() -> None:
    """Tear the process group down (gloo can abort at interpreter exit otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
