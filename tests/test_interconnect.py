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


def test_a_slow_link_stops_the_table_within_its_budget():
    plan = bw.plan_check(248_024, "cpu")  # budget 15 s; 2 warm-up calls, 3 blocks of 10 (<= 1 MiB) or 3 calls
    one_mib = {"size_bytes": MIB, "time_us": 85_000.0, "block_times_us": [85_000.0, 90_000.0, 95_000.0],
               "iterations": 10}
    assert bw.row_cost_s(one_mib, plan) == pytest.approx((270_000.0 * 10 + 85_000.0 * 2) / 1e6)  # 2.87 s
    assert bw.projected_cost_s(one_mib, 8 * MIB, plan) == pytest.approx(0.68 * 11)  # 8 x 85 ms, 11 calls: 7.48 s
    assert bw.projected_cost_s({"size_bytes": 65536, "time_us": 500.0}, 8, plan) == pytest.approx(0.0005 * 32)
    # from 8 B (latency): 64 KiB is projected at the same time per call, not 8192 times it
    assert bw.projected_cost_s({"size_bytes": 8, "time_us": 1000.0}, 65536, plan) == pytest.approx(0.001 * 32)


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
    from bench.run.interconnect import InterconnectCheck

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


# --- the verdict (literal numbers) ---------------------------------------------------------------------------

def _check(busbw_at_8mib: float, pair_busbw: list[float] | None = None, transport: str = "TCP (gloo)") -> dict:
    """A measured record of 2 sizes (8 B: latency; 8 MiB: bandwidth) with node pairs of the given busbw."""
    def table(bw8: float) -> list[dict]:
        return [{"size_bytes": 8, "time_us": 100.0, "algbw_gbps": 8e-5, "busbw_gbps": 8e-5},
                {"size_bytes": 8 * MIB, "time_us": 8 * MIB / bw8 / 1e3, "algbw_gbps": bw8, "busbw_gbps": bw8}]
    pairs = [{"nodes": [f"n{i}", f"n{i + 1}"], "table": table(b), "same_as_world": False, "round": 1}
             for i, b in enumerate(pair_busbw or [])]
    return {"status": "measured", "transport": transport, "world_size": 4, "nodes": ["n0", "n1", "n2", "n3"][:max(2, len(pairs) + 1)],
            "table": table(busbw_at_8mib), "latency_us": 100.0, "sizes_bytes": [8, 8 * MIB], "pairs": pairs,
            "elapsed_s": 1.0}


def test_summary_takes_the_median_over_runs():
    from bench.results.interconnect import summarise

    s = summarise(
        [_check(1.0, [1.0]), _check(3.0, [2.0]), _check(2.0, [9.0])], ["a", "b", "c"])
    assert s["busbw_gbps"] == {"8": 8e-5, str(8 * MIB): 2.0} and s["pairs"][0]["busbw_gbps"][str(8 * MIB)] == 2.0
    assert s["runs"] == ["a", "b", "c"] and s["transport"] == "TCP (gloo)" and s["world_size"] == 4


def test_bandwidth_below_the_baseline_by_more_than_the_tolerance_is_degraded_and_names_the_pair():
    from bench.results.interconnect import DEGRADED, NO_VERDICT, OK, summarise, verdict

    ref = summarise([_check(10.0, [10.0, 10.0])])
    same = verdict(summarise([_check(9.5, [9.2, 10.4])]), ref, 10.0)  # -5 %, -8 %, +4 %: within 10 %
    assert same["verdict"] == OK and same["degraded"] == []
    slow_pair = verdict(summarise([_check(9.5, [9.5, 5.0])]), ref, 10.0)  # the second pair at half speed
    assert slow_pair["verdict"] == DEGRADED and slow_pair["degraded"] == ["node pair n1-n2"]
    assert "transport TCP (gloo)" in slow_pair["text"] and "-50.0%" in slow_pair["text"]
    edge = verdict(summarise([_check(8.9)]), summarise([_check(10.0)]), 10.0)  # -11 %
    assert edge["degraded"] == ["all ranks"]
    assert verdict(summarise([_check(8.9)]), summarise([_check(10.0)]), 12.0)["verdict"] == OK
    fallback = verdict(summarise([_check(2.0, transport="Socket")]), summarise([_check(10.0, transport="IB")]), 10.0)
    assert fallback["verdict"] == DEGRADED and "Socket now, IB in the baseline" in fallback["text"]
    assert verdict(summarise([_check(2.0)]), None, 10.0)["verdict"] == NO_VERDICT


def test_no_interconnect_verdict_on_another_system_or_topology():
    from bench.results.interconnect import NO_VERDICT, summarise, verdict

    now, ref = summarise([_check(2.0)]), summarise([_check(10.0)])
    a100 = {"gpu_count": 4, "gpu_names": ["NVIDIA A100"]}
    h100 = {"gpu_count": 4, "gpu_names": ["NVIDIA H100"]}
    other = verdict(now, ref, 10.0, h100, a100)
    assert other["verdict"] == NO_VERDICT and "different hardware" in other["text"]
    assert verdict(now, ref, 10.0, a100, a100)["verdict"] != NO_VERDICT  # same system: judged
    assert verdict({**now, "world_size": 8}, ref, 10.0)["verdict"] == NO_VERDICT


def test_baseline_keeps_the_bandwidth_and_compare_flags_the_degraded_run(tmp_path, capsys):
    from bench.cli import main
    from bench.results.baselines import write_baseline
    from tests import results_factory as rf

    then = [{**rf.result("ddp", [100.0], devices=4), "interconnect": _check(b, [b, b])} for b in (10.0, 11.0, 9.0)]
    baseline = rf.baseline_of(*then)
    assert baseline["cases"]["ddp"]["interconnect"]["busbw_gbps"][str(8 * MIB)] == 10.0  # the median
    assert rf.baseline_of(rf.result("ddp", [100.0], devices=4))["cases"]["ddp"]["interconnect"] is None
    base = write_baseline(baseline, tmp_path / "b.json")
    cases = {"ok": _check(9.6, [9.6, 9.4]), "slow": _check(9.6, [9.6, 4.0])}
    for name, check in cases.items():
        (path,) = rf.write(tmp_path / name, {**rf.result("ddp", [101.0], devices=4), "interconnect": check})
        capsys.readouterr()
        main(["compare", str(path), "--baseline", str(base)])
        out = capsys.readouterr().out
        assert ("interconnect degraded at node pair n1-n2" in out) == (name == "slow"), out
        assert ("interconnect ok" in out) == (name == "ok"), out


def test_comm_command_measures_without_training_and_judges_against_a_baseline(tmp_path):
    import json

    from bench.measure.environment import collect
    from bench.results.baselines import write_baseline
    from tests import results_factory as rf

    # a baseline of this machine at 1000 GB/s, beyond any loopback: the check is judged degraded (exit 1)
    fast = {**_check(1000.0), "world_size": 2, "nodes": ["here"]}
    base = write_baseline(rf.baseline_of({**rf.result("ddp", [100.0], devices=2, env=collect()), "interconnect": fast}),
                          tmp_path / "fast.json")
    out = tmp_path / "comm.json"
    proc = run_cli("comm", "--devices", "2", "--out", str(out), "--baseline", str(base))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "busbw [GB/s]" in proc.stdout and "interconnect degraded at all ranks (transport TCP (gloo)" in proc.stdout
    check = json.loads(out.read_text())["interconnect"]
    assert check["status"] == "measured" and check["world_size"] == 2 and len(check["table"]) == 6
    assert check["pairs"] == [] and check["table"][-1]["busbw_gbps"] < 1000.0


def test_comm_refuses_bad_input_before_any_rank_starts(tmp_path, capsys):
    from bench.cli import main

    assert main(["comm", "--baseline", str(tmp_path / "missing.json")]) == 2  # in this process: nothing spawned
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse's check of every --tolerance (bench.core.options)
        main(["comm", "--tolerance", "-1"])
    assert stop.value.code == 2 and "--tolerance" in capsys.readouterr().err
    assert main(["comm", "--devices", "0"]) == 2  # 0 processes is bad input, not the default 2
    assert "--devices must be >= 1, got 0" in capsys.readouterr().err
    assert main(["comm", "--out", str(tmp_path / "typo" / "comm.json")]) == 2
    assert "does not exist: create it first" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    assert main(["comm", "--out", str(tmp_path)]) == 2 and "is a folder" in capsys.readouterr().err


def _pairs_rank(rank: int, world: int, port: int, hosts: list[str], queue) -> None:
    import torch
    import torch.distributed as dist

    from bench.run.allreduce import measure_pairs

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    plan = bw.CheckPlan((8, 4096), gradient_bytes=8, bucket_bytes=8, max_bytes=4096, warmup=1, blocks=2,
                        small_iterations=2)
    try:
        pairs = measure_pairs(plan, torch.device("cpu"), hosts, world_table=[])
    finally:
        dist.destroy_process_group()
    queue.put((rank, pairs))


def test_pairs_of_three_nodes_are_measured_in_their_own_groups_in_two_rounds():
    # 3 gloo ranks standing for 3 nodes (their host names given): real new_group and all-reduces per pair,
    # the rank outside a round's pair waiting for it
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_pairs_rank, args=(3, port, ["a", "b", "c"], queue), nprocs=3, start_method="spawn")
    got = dict(queue.get() for _ in range(3))
    assert [(p["nodes"], p["ranks"], p["round"]) for p in got[0]] == [(["a", "b"], [0, 1], 1), (["b", "c"], [1, 2], 2)]
    assert all(got[r] == got[0] for r in range(3))  # every rank holds every pair's table
    for pair in got[0]:
        assert not pair["same_as_world"] and [row["size_bytes"] for row in pair["table"]] == [8, 4096]
        assert all(row["busbw_gbps"] == pytest.approx(row["algbw_gbps"]) for row in pair["table"])  # 2 ranks a pair
