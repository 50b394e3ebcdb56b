"""The host-read counter (bench.measure.hostsync) and an evaluation step without host reads (issue 31 item 4)."""

from __future__ import annotations

import torch

from bench.core.config import make_config
from bench.measure.hostsync import HostReadCounter
from bench.run.model import CifarModule


def test_counter_counts_each_kind_of_host_read_and_nothing_else():
    t = torch.tensor([0.0, 1.0])
    with HostReadCounter() as reads:
        (t * 2).sum()  # device work only
        bool(t.any())
        t.max().item()
        t.tolist()
        float(t[0])
        torch.nonzero(t)
    assert reads.by_name == {"Tensor.__bool__": 1, "Tensor.item": 1, "Tensor.tolist": 1, "Tensor.__float__": 1,
                             "torch.nonzero": 1}
    assert reads.total == 5
    with HostReadCounter() as none:
        t.cpu()  # already on the host: no read
    assert none.total == 0


def test_an_evaluation_step_reads_nothing_back_to_the_host():
    """torchmetrics' SumMetric ran `nans.any() or nans_weight.any()` on every update: 2 host reads per metric
    and step (4 a step with the two counts); the step now only queues device work."""
    config = make_config("smoke", data="synthetic")
    module = CifarModule(config)
    images, labels = torch.randn(50, 3, 32, 32), torch.randint(0, 10, (50,))
    module.test_step((images, labels), 0)  # first call apart (lazy set-up)
    with HostReadCounter() as reads:
        for i in range(3):
            module.test_step((images, labels), i + 1)
    assert reads.total == 0, reads.by_name
    assert module.eval_seen == 200 and 0 <= int(module.eval_correct) <= 200


def test_device_only_leaves_cpu_tensors_reads_out():
    with HostReadCounter(device_only=True) as reads:
        bool(torch.tensor(1.0) > 0)
        int(torch.tensor(3))
    assert reads.total == 0
