"""What changed between the two sides of a comparison (issue 27, item 6): bench.results.envdiff with literal records."""

from __future__ import annotations

from bench.results.envdiff import what_changed
from bench.results.reading import records_of
from tests.results_factory import CPU, H200, baseline_of, records, result


def test_versions_image_commit_and_work_that_differ_are_listed():
    before = records(result("baseline", [10.0], env={**H200, "container_image": "bench-1.sif", "git_commit": "aaa"}))
    after = records(result("baseline", [10.0], env={**H200, "torch": "2.15.0", "cuda_driver": "590.2",
                                                    "container_image": "bench-2.sif", "git_commit": "bbb"}, epochs=3))
    assert what_changed(after, before) == ["torch: 2.14.1+cu130 -> 2.15.0", "driver: 580.1 -> 590.2",
                                           "image: bench-1.sif -> bench-2.sif", "commit: aaa -> bbb", "epochs: 20 -> 3"]


def test_same_facts_give_nothing_and_cores_and_unknowns_are_shown():
    runs = records(result("baseline", [10.0], env=CPU))
    assert what_changed(runs, runs) == []
    given = {**CPU, "cores_given": {"usable_cores": 1, "loader_workers": 0, "torch_threads": 1}}
    lines = what_changed(records(result("baseline", [10.0], env=given)), runs)
    assert "usable cores: ? -> 1" in lines and "loader workers: ? -> 0" in lines


def test_a_side_with_several_values_shows_them_all():
    base = baseline_of(result("baseline", [10.0], env=CPU))
    now = records(result("baseline", [10.0], env=CPU), result("baseline", [10.0], env={**CPU, "python": "3.12.1"}))
    assert "Python: 3.11.7 -> 3.11.7 | 3.12.1" in what_changed(now, records_of(base, "test"))


def test_library_variables_kernels_and_packages_that_differ_are_listed():
    before = records(result("baseline", [10.0], env={**CPU, "cpu_capability": "AVX2", "library_env": {},
                                                     "packages": {"numpy": "2.3.1", "torch": "2.14.1", "tqdm": "4.67"}}))
    after = records(result("baseline", [10.0], env={**CPU, "cpu_capability": "DEFAULT",
                                                    "library_env": {"ATEN_CPU_CAPABILITY": "default"},
                                                    "packages": {"numpy": "2.3.2", "torch": "2.14.1", "tqdm": "4.67",
                                                                 "jemalloc-shim": "1.0"}}))
    lines = what_changed(after, before)
    assert lines == ["torch CPU kernels: AVX2 -> DEFAULT", "ATEN_CPU_CAPABILITY: unset -> default",
                     "package jemalloc-shim: not installed -> 1.0", "package numpy: 2.3.1 -> 2.3.2"]
    # a result older than library_env: its variables are unknown ("?"), not "unset"
    old = records(result("baseline", [10.0], env={**CPU, "cpu_capability": "DEFAULT"}))
    assert "ATEN_CPU_CAPABILITY: ? -> default" in what_changed(after, old)
    assert not any(line.startswith("package ") for line in what_changed(after, old))  # packages unknown there


def test_communication_variables_are_listed_as_set_or_unset_where_both_sides_recorded_them():
    plain, ring = result("ddp", [10.0], env=CPU, devices=2), result("ddp", [10.0], env=CPU, devices=2)
    plain["world"]["comm_env"], ring["world"]["comm_env"] = {}, {"NCCL_ALGO": "Ring"}
    assert what_changed(records(ring), records(plain)) == ["NCCL_ALGO: unset -> Ring"]
    # a baseline file's samples hold no comm_env: a variable the user keeps set is no change against it
    assert what_changed(records(ring), records_of(baseline_of(result("ddp", [10.0], env=CPU, devices=2)), "b")) == []


def test_the_same_values_in_another_order_are_no_change():
    ref = records(result("ddp", [10.0], env=CPU, devices=2), result("ddp", [10.0], env={**CPU, "python": "3.12.1"}, devices=2))
    now = records(result("ddp", [10.0], env={**CPU, "python": "3.12.1"}, devices=2), result("ddp", [10.0], env=CPU, devices=2))
    assert what_changed(now, ref) == []


def test_by_case_a_fact_of_one_case_is_named_with_it_and_a_common_one_once():
    from bench.results.envdiff import what_changed_by_case

    ref = records(result("baseline", [10.0], env=CPU), result("ddp", [6.0], env=CPU, devices=2))
    base_now = result("baseline", [10.0], env={**CPU, "torch": "2.15.0"})
    ddp_now = result("ddp", [6.0], env={**CPU, "torch": "2.15.0"}, devices=2)
    ddp_now["world"]["comm_env"], base_now["world"]["comm_env"] = {"GLOO_SOCKET_IFNAME": "eth1"}, {}
    for r in ref:
        r.world["comm_env"] = {}
    lines = what_changed_by_case(records(base_now, ddp_now), ref)
    assert lines == ["torch: 2.14.1+cu130 -> 2.15.0", "ddp: GLOO_SOCKET_IFNAME: unset -> eth1"]
    # pooled, the baseline case's "unset" would have shown as a value of the new side
    assert "GLOO_SOCKET_IFNAME: unset -> unset | eth1" in what_changed(records(base_now, ddp_now), ref)


def test_library_variables_are_those_set_when_the_process_started(monkeypatch):
    from bench.measure import environment

    seen = environment.library_env({"OMP_NUM_THREADS": "4", "HOME": "/root", "ATEN_CPU_CAPABILITY": "default",
                                    "NCCL_ALGO": "Ring", "LD_PRELOAD": "libjemalloc.so"})
    assert seen == {"ATEN_CPU_CAPABILITY": "default", "LD_PRELOAD": "libjemalloc.so", "OMP_NUM_THREADS": "4"}
    # set later in the process (as Lightning's launcher sets OMP_NUM_THREADS for ddp): not the user's setting
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    assert "MKL_NUM_THREADS" not in environment.library_env() or "MKL_NUM_THREADS" in environment.ENV_AT_START
