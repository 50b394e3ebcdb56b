"""The interconnect check: nccl-tests' arithmetic, the sizes, the node pairs (literal numbers), and the
table a local ddp run records (a real 2-rank gloo run)."""

from __future__ import annotations

import pytest

from bench.core.config import make_config
from bench.results import bandwidth as bw
from tests.conftest import run_cli, run_result

MIB = 1024 * 1024


def test_bus_bandwidth_follows_nccl_tests():
    # 100 MB in 10 ms over 4 ranks: algbw 10 GB/s, busbw 10 x 2 x 3 / 4 = 15 GB/s
    row = bw.size_row(100_000_000, [0.012, 0.010, 0.011], ranks=4, iterations=3)
    assert row["time_us"] == pytest.approx(10_000.0) and row["algbw_gbps"] == pytest.approx(10.0)
    assert row["busbw_gbps"] == pytest.approx(15.0) and row["blocks"] == 3
    assert bw.bus_factor(2) == 1.0 and bw.bus_factor(8) == pytest.approx(1.75)
    assert bw.size_row(8, [0.001], ranks=1, iterations=10)["busbw_gbps"] == 0.0  # one rank: a local copy
    with pytest.raises(ValueError):
        bw.bus_factor(0)


def test_sizes_reach_beyond_the_gradient_bucket_and_stay_capped_on_cpu():
    small = bw.plan_check(248_024, "cpu")  # simple_cnn's 62,006 float32 gradients
    assert small.sizes_bytes == (8, 65536, 248_024, 496_048, MIB, 8 * MIB) and small.bucket_bytes == 248_024
    big = bw.plan_check(44_695_848, "gpu")  # resnet18: the bucket is DDP's 25 MiB cap, and twice it is measured
    assert big.bucket_bytes == 25 * MIB and big.sizes_bytes == (8, 65536, MIB, 25 * MIB, 50 * MIB, 100 * MIB, 256 * MIB)
    assert max(bw.plan_check(44_695_848, "cpu").sizes_bytes) == 8 * MIB  # capped: the check stays ~1-2 s on gloo
    assert all(s % 4 == 0 for s in bw.plan_check(1001, "cpu").sizes_bytes)  # whole float32 elements
    with pytest.raises(ValueError):
        bw.plan_check(10, "tpu")


def test_node_pairs_are_ring_neighbours_in_at_most_two_rounds_of_disjoint_pairs():
    assert bw.pair_rounds(1) == [] and bw.pair_rounds(2) == [[(0, 1)]]
    assert bw.pair_rounds(4) == [[(0, 1), (2, 3)], [(1, 2), (3, 0)]]
    assert bw.pair_rounds(5) == [[(0, 1), (2, 3)], [(1, 2), (3, 4)]]  # every node paired, 2 rounds
    for n in range(2, 9):
        rounds = bw.pair_rounds(n)
        assert len(rounds) <= 2 and {i for r in rounds for p in r for i in p} == set(range(n))
        for r in rounds:  # disjoint within a round
            nodes = [i for p in r for i in p]
            assert len(nodes) == len(set(nodes))
    hosts = ["n1", "n1", "n2", "n2", "n3", "n3"]
    assert bw.node_order(hosts) == ["n1", "n2", "n3"] and bw.pair_ranks(hosts, (1, 2)) == [2, 3, 4, 5]


def test_size_text():
    assert [bw.size_text(s) for s in (8, 65536, 248_024, 25 * MIB)] == ["8 B", "64 KiB", "242.2 KiB", "25 MiB"]


def test_check_is_off_in_smoke_and_recorded_as_skipped(tmp_path):
    from bench.run.allreduce import InterconnectCheck

    smoke = make_config("smoke", case="ddp", devices=2, data="synthetic", out_dir=str(tmp_path))
    assert not smoke.comm_check and InterconnectCheck(smoke).record["status"] == "skipped"
    assert make_config("cpu", case="ddp", devices=2, data="synthetic", out_dir=str(tmp_path)).comm_check
    assert InterconnectCheck(make_config("smoke", data="synthetic", out_dir=str(tmp_path))).record is None  # baseline


def test_local_ddp_run_records_the_bandwidth_table(tmp_path):
    out = tmp_path / "runs"
    proc = run_cli("run", "--case", "ddp", "--devices", "2", "--data", "synthetic", "--preset", "smoke",
                   "--train-samples", "640", "--test-samples", "200", "--comm-check", "--out", str(out))
    _, result = run_result(proc, out)
    check = result["interconnect"]
    assert check["status"] == "measured" and check["backend"] == "gloo" and check["transport"] == "TCP (gloo)"
    assert check["world_size"] == 2 and check["pairs"] == []  # one node: no node pairs
    assert [row["size_bytes"] for row in check["table"]] == check["sizes_bytes"]
    assert max(check["sizes_bytes"]) > check["bucket_bytes"] == result["metrics"]["parameters"] * 4
    for row in check["table"]:  # 2 ranks: busbw = algbw x 2(2-1)/2 = algbw
        assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"]) and row["algbw_gbps"] > 0
        assert row["time_us"] == pytest.approx(min(row["block_times_us"]))
    assert check["latency_us"] == check["table"][0]["time_us"] and check["elapsed_s"] > 0
