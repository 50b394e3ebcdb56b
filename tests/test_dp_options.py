"""dp's refusals (issue 31 items 1, 2) and its shared-memory need (item 7), each with the CPU reproduction of
the mechanism that makes the refusal necessary: DataParallel's replicas need 2+ GPUs, so the proof is here."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from bench.core.config import ConfigError, make_config
from bench.data.datamodule import check_shared_memory


def test_a_compiled_modules_replica_runs_the_originals_forward():
    """Item 1's mechanism: nn.Module.compile stores torch.compile(self._call_impl), a method bound to the
    original, and DataParallel's replicas copy __dict__ (_replicate_for_data_parallel), so a replica calls
    the original's forward with the original's weights."""
    original = nn.Linear(2, 1)
    original.compile(backend="eager")
    replica = original._replicate_for_data_parallel()
    for key in ("weight", "bias"):  # as torch.nn.parallel.replicate: a replica's own copies, plain attributes
        setattr(replica, key, torch.zeros_like(getattr(original, key)).detach())
    x = torch.ones(1, 2)
    assert float(replica.forward(x).detach()) == 0.0  # the replica's own weights
    # its call: the original's weights
    assert float(replica(x).detach()) == pytest.approx(float(original(x).detach())) != 0.0


def test_flatten_unflatten_of_replicate_drops_channels_last():
    """Item 2's mechanism: replicate()'s broadcast_coalesced flattens the parameters into one buffer and
    unflattens them with the ATen helpers below, so replicas 1..N get contiguous NCHW weights."""
    weight = torch.randn(16, 6, 5, 5).contiguous(memory_format=torch.channels_last)
    flat = torch._utils._flatten_dense_tensors([weight])
    (copy,) = torch._utils._unflatten_dense_tensors(flat, [weight])
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not copy.is_contiguous(memory_format=torch.channels_last) and torch.equal(copy, weight)


@pytest.mark.parametrize("option, why", [({"compile": True}, "--compile with case dp is refused"),
                                         ({"channels_last": True}, "--channels-last with case dp is refused")])
def test_dp_refuses_compile_and_channels_last_before_anything_runs(option, why):
    with pytest.raises(ConfigError, match=why):
        make_config("full", case="dp", devices=2, data="synthetic", **option)
    make_config("full", case="ddp", devices=2, data="synthetic", **option)  # ddp keeps them


def test_dp_shared_memory_check_counts_the_global_batch(monkeypatch, tmp_path):
    """Item 7: dp's one loader yields the whole global batch (8192 uint8 images: 25 MB) although each of the
    4 GPUs computes a quarter of it: 2 workers x 2 batches in flight need ~96 MiB, not the ~24 of 2048."""
    fake = type("S", (), {"f_bavail": 64 * 2**20 // 4096, "f_frsize": 4096})  # 64 MiB free
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    dp = make_config("full", case="dp", devices=4, data="synthetic", global_batch_size=8192, eval_batch_size=1000)
    with pytest.raises(ConfigError, match="need about 96.0 MiB"):
        check_shared_memory(dp, 2, tmp_path)
    ddp = make_config("full", case="ddp", devices=4, data="synthetic", global_batch_size=8192, eval_batch_size=1000)
    check_shared_memory(ddp, 2, tmp_path)  # each ddp rank's loader yields its 2048 images
