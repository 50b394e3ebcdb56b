""""Same system" with the cores a run was given (issue 27, item 4): bench.results.system and
bench.measure.contention's readers, with literal environments and cgroup files."""

from __future__ import annotations

import pytest

from bench.measure.contention import cgroup_quota_cores, cores_given, parse_quota
from bench.results.baselines import record_baseline
from bench.results.compare import compare, exit_code, system_of
from bench.results.system import hardware_difference, unchecked
from tests.results_factory import CPU, baseline_of, records, result

TWO = {**CPU, "cores_given": {"usable_cores": 2, "loader_workers": 1, "torch_threads": 1}}
ONE = {**CPU, "cores_given": {"usable_cores": 1, "loader_workers": 0, "torch_threads": 1}}  # taskset -c 0


def test_usable_cores_and_loader_workers_are_part_of_the_system():
    assert system_of(TWO) == {"CPU model": "AMD EPYC", "CPU cores": 2, "usable cores": 2, "loader workers": 1,
                              "torch threads": 1}
    assert hardware_difference(ONE, TWO) == "different hardware (loader workers 0 vs 1; usable cores 1 vs 2)"
    assert hardware_difference(TWO, {**TWO, "torch": "2.15"}) is None  # versions are not the system


def test_taskset_runs_are_not_judged_against_a_two_core_baseline():
    """Issue 27, item 4: under taskset -c 0 the usable cores went 2 -> 1: no verdict, the cores named."""
    base = baseline_of(result("baseline", [10.0, 10.1, 9.9], env=TWO))
    (c,) = compare(records(result("baseline", [16.0, 16.1, 15.9], env=ONE)), base)
    assert c.verdict == "no verdict" and any("usable cores 1 vs 2" in n for n in c.notes)
    assert exit_code([c]) == 0


def test_runs_on_different_cores_are_not_pooled_nor_recorded_together():
    base = baseline_of(result("baseline", [10.0, 10.1, 9.9], env=TWO))
    now = records(result("baseline", [10.0, 10.1], env=TWO), result("baseline", [16.0], env=ONE))
    (c,) = compare(now, base)
    assert c.verdict == "not comparable" and c.diff_pct is None
    assert any("different systems" in n and "usable cores" in n for n in c.notes)
    with pytest.raises(ValueError, match="different systems .*usable cores 2 vs 1"):
        record_baseline(now, name="x", source="test")


def test_old_baseline_without_cores_is_judged_with_a_note():
    """The stated rule: a fact recorded on one side only is not compared, and the verdict says so."""
    old = baseline_of(result("baseline", [10.0, 10.1, 9.9], env=CPU))
    assert unchecked(TWO, CPU) == ["loader workers", "torch threads", "usable cores"]
    (c,) = compare(records(result("baseline", [10.0, 10.1, 9.9], env=TWO)), old)
    assert c.verdict == "unchanged"
    assert any("recorded on one side only" in n and "usable cores" in n for n in c.notes)


@pytest.mark.parametrize("kw, cores", [({"cpu_max": "150000 100000\n"}, 1.5), ({"cpu_max": "max 100000"}, None),
                                       ({"quota_us": "200000", "period_us": "100000"}, 2.0),
                                       ({"quota_us": "-1", "period_us": "100000"}, None)])
def test_cgroup_quota_in_cores(kw, cores):
    assert parse_quota(**kw) == cores


def test_cgroup_v2_quota_is_the_smallest_on_the_path(tmp_path):
    (tmp_path / "job" / "step").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "job" / "cpu.max").write_text("100000 100000\n")
    (tmp_path / "job" / "step" / "cpu.max").write_text("250000 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job/step\n")
    assert cgroup_quota_cores(root=tmp_path, proc_cgroup=proc) == 1.0
    assert cgroup_quota_cores(root=tmp_path, proc_cgroup=tmp_path / "absent") is None


def test_cores_given_reads_this_process():
    given = cores_given(1, 1, 0)
    assert given["usable_cores"] >= 1 and (given["loader_workers"], given["torch_threads"]) == (0, 1)
