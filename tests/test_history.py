"""The history's series and command (bench.history.series, bench.history.command): what changed at a step,
the newest runs judged against the last stable segment, invalid and tainted runs kept but never figures,
malformed files refused. Literal numbers; every history lives under tmp_path."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.history import store
from bench.history.series import build
from tests.results_factory import CPU, records, result

BEFORE = [20.1, 19.8, 20.3, 20.0, 19.9, 20.2, 20.0, 20.1]
AFTER = [24.2, 23.9, 24.1, 24.0, 24.3, 23.8]


def history_results(after=AFTER, newest=(), **later) -> list[dict]:
    """Baseline runs, one a minute: BEFORE at commit aaa, then AFTER at commit bbb (torch 2.15 there)."""
    out = []
    for i, fit in enumerate([*BEFORE, *after, *newest]):
        env = {**CPU, "git_commit": "aaa", "git_dirty": False}
        extra = {}
        if i >= len(BEFORE):
            env = {**env, "git_commit": "bbb", "torch": "2.15.0"}
            extra = later
        r = result("baseline", [fit], env=env, run_id=f"baseline-{i:02d}", **extra)
        r["started_utc"] = f"2026-01-01T00:{i:02d}:00+00:00"
        out.append(r)
    return out


def test_the_step_is_found_and_named_by_the_facts_that_changed_there():
    [s] = build(records(*history_results(val_every_n_epochs=1)))
    assert [c.index for c in s.points] == [len(BEFORE)]
    [step] = s.steps
    assert step["run_id"] == f"baseline-{len(BEFORE):02d}"
    assert step["ratio"] == pytest.approx(24.05 / 20.05)
    changed = "\n".join(step["what_changed"])
    assert "commit: aaa -> bbb" in changed and "torch: 2.14.1+cu130 -> 2.15.0" in changed
    assert "option val_every_n_epochs: None -> 1" in changed
    assert "Python" not in changed and "epochs:" not in changed.replace("val_every_n_epochs", "")


def test_newest_runs_are_judged_against_the_last_stable_segment():
    # the newest 3 runs are 30 % slower than the segment after the step: a regression (no change point can
    # be placed among them)
    [s] = build(records(*history_results(newest=(31.0, 31.4, 31.2))))
    assert s.newest["verdict"] == "regression"
    assert s.newest["reference_runs"] == [f"baseline-{i:02d}" for i in range(len(BEFORE), len(BEFORE) + len(AFTER))]
    assert s.newest["ratio"] == pytest.approx(31.2 / 24.05)


def test_invalid_and_tainted_runs_are_kept_but_never_figures():
    rs = history_results()
    rs[3]["status"], rs[3]["reason"] = "failed", "rank 1 died"
    rs[5]["contention"] = {"classification": {"state": "tainted", "reasons": ["other processes busy"]}}
    rs[5]["metrics"]["fit_s"] = rs[5]["metrics"]["fit_s_samples"][0] = 99.0
    [s] = build(records(*rs))
    assert len(s.runs) == len(rs) and len(s.valid) == len(rs) - 2
    assert all(r.fit_s != 99.0 for r in s.valid)
    assert [c.index for c in s.points] == [len(BEFORE) - 2]  # among the figures
    assert s.steps[0]["run_number"] == len(BEFORE) + 1  # in the history (1 = oldest), as the page's x axis


def _add(tmp_path, results) -> list[str]:
    folder = tmp_path / "results"
    folder.mkdir(exist_ok=True)
    paths = []
    for r in results:
        (folder / f"{r['run_id']}.json").write_text(json.dumps(r))
        paths.append(str(folder / f"{r['run_id']}.json"))
    return paths


def test_command_exit_status_and_json(tmp_path, capsys):
    where = str(tmp_path / "hist")
    assert main(["history", "--history", where]) == 6  # nothing there yet
    assert main(["history", "add", *_add(tmp_path, history_results()), "--history", where]) == 0
    assert main(["history", "--history", where]) == 0
    out = capsys.readouterr().out
    assert "change at run 9" in out and "commit: aaa -> bbb" in out
    assert main(["history", "add", *_add(tmp_path, history_results(newest=(31.0, 31.4, 31.2))),
                 "--history", where]) == 0
    capsys.readouterr()
    assert main(["history", "--json", "--history", where]) == 1  # the newest runs are a regression
    [series] = json.loads(capsys.readouterr().out)
    assert series["newest"]["verdict"] == "regression" and len(series["runs"]) == 17
    assert main(["history", "--level", "1.5", "--history", where]) == 2


def test_a_foreign_or_malformed_file_is_refused_and_the_history_is_unchanged(tmp_path, capsys):
    where = tmp_path / "hist"
    good = _add(tmp_path, history_results()[:2])
    bad = tmp_path / "foreign.json"
    bad.write_text(json.dumps({"schema": "other-tool/result"}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "cifar-bench/result", "run_id": ')
    words = tmp_path / "words.json"  # a figure that is no number
    r = history_results()[0]
    r["metrics"]["fit_s"] = "fast"
    words.write_text(json.dumps(r))
    for wrong in (bad, broken, words):
        assert main(["history", "add", *good, str(wrong), "--history", str(where)]) == 2
        assert str(wrong) in capsys.readouterr().err
        assert not (where / "runs").exists() or not list((where / "runs").iterdir())


def test_benchmark_history_variable_moves_it_and_off_stops_automatic_adding(tmp_path, monkeypatch):
    monkeypatch.setenv(store.ENV, str(tmp_path / "moved"))
    assert store.root() == tmp_path / "moved"
    store.add_automatically(history_results()[:1], "test")
    assert len(store.load(tmp_path / "moved")[0]) == 1
    monkeypatch.setenv(store.ENV, "off")
    assert store.root() is None
    store.add_automatically(history_results()[1:2], "test")  # off: nothing added anywhere
    assert len(store.load(tmp_path / "moved")[0]) == 1
    monkeypatch.delenv(store.ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store.root() == tmp_path / "xdg" / "cifar-bench" / "history"


def test_a_file_put_into_the_history_by_hand_is_skipped_by_readers(tmp_path):
    where = tmp_path / "hist"
    store.add([(r, "t") for r in history_results()[:3]], where)
    (where / "runs" / "notes.json").write_text("{}")
    entries, skipped = store.load(where)
    assert len(entries) == 3 and len(skipped) == 1 and "notes.json" in skipped[0]
    entries, _ = store.load(where)  # from the rebuilt index
    assert sorted(e["result"]["run_id"] for e in entries) == ["baseline-00", "baseline-01", "baseline-02"]


def test_a_step_in_the_machine_load_is_named():
    rs = history_results()
    for i, r in enumerate(rs):  # the rule off (as on a busy CI machine): classified, recorded, not excluded
        r["contention"] = {"rule": "off", "classification": {"state": "clean", "other_busy_cores": 1.8 if i < 8 else 0.1}}
    [s] = build(records(*rs))
    assert any(line.startswith("machine load: other processes kept 1.80 -> 0.10 cores") for line in s.steps[0]["what_changed"])
    for r in rs:
        r["contention"]["classification"]["other_busy_cores"] = 0.3  # within the threshold: not named
    [s] = build(records(*rs))
    assert not any(line.startswith("machine load") for line in s.steps[0]["what_changed"])


def _series_of(fits: list[float], change_at: int | None, **env) -> list[dict]:
    """Baseline runs with these fit times; from run ``change_at`` on, the environment has ``env``."""
    out = []
    for i, fit in enumerate(fits):
        r = result("baseline", [fit], env={**CPU, "git_dirty": False, **(env if change_at is not None
                                                                             and i >= change_at else {})},
                   run_id=f"baseline-{i:02d}")
        r["started_utc"] = f"2026-01-01T00:{i:02d}:00+00:00"
        out.append(r)
    return out


# a 2-SD step: the numbers put it at run 8 (posterior 0.24 there, 0.76 at run 9); sd of the runs about 0.25 s
AMBIGUOUS = [20.1, 19.6, 20.4, 20.0, 19.7, 20.3, 19.9, 20.2, 20.9, 21.8, 22.1, 21.7, 22.2, 21.9, 22.0]
SHARP = [20.1, 19.8, 20.3, 20.0, 19.9, 20.2, 20.0, 20.1, 24.2, 23.9, 24.1, 24.0, 24.3, 23.8]


def test_a_step_the_numbers_place_one_run_off_moves_to_the_recorded_change_beside_it():
    [s] = build(records(*_series_of(AMBIGUOUS, 9, git_commit="bbb")))
    assert [c.index for c in s.points] == [9]
    assert "commit: 0123456789abcdef0123 -> bbb" in s.steps[0]["what_changed"]
    [s] = build(records(*_series_of(AMBIGUOUS, None)))  # no recorded change: where the numbers put it
    assert [c.index for c in s.points] == [8]


def test_a_sharp_step_is_not_moved_onto_an_unrelated_change_beside_it():
    for at in (9, 10):  # a package update one and two runs after a step the numbers place exactly
        [s] = build(records(*_series_of(SHARP, at, packages={"numpy": "2.3.2"})))
        assert [c.index for c in s.points] == [8]


def test_snap_keeps_segments_of_min_size_and_moves_only_to_a_single_change():
    from bench.history.changepoints import ChangePoint
    from bench.history.series import snap

    rs = records(*_series_of(AMBIGUOUS, 9, git_commit="bbb"))
    cp = ChangePoint(8, 0.001, 1.0)
    assert snap([cp], rs, 3) == [ChangePoint(9, 0.001, 1.0)]
    assert snap([cp], rs, 7) == [cp]  # 9 would leave the last segment 6 runs < 7
    two = records(*_series_of(AMBIGUOUS, 9, git_commit="bbb")[:7], *_series_of(AMBIGUOUS, 0, git_commit="ccc")[7:9],
                  *_series_of(AMBIGUOUS, 0, git_commit="bbb")[9:])
    assert snap([cp], two, 3) == [cp]  # changes at 7 and 9: which one? the numbers' place stays


def test_the_newest_verdict_says_when_the_contention_rule_was_off_for_its_runs():
    rs = history_results(newest=(31.0, 31.4, 31.2))
    rs[-1]["contention"] = {"rule": "off", "classification": {"state": "tainted", "reasons": ["busy"]}}
    [s] = build(records(*rs))
    assert any("1 of these runs were tainted" in n and "BENCH_CONTENTION_RULE=off" in n for n in s.newest["notes"])
    [s] = build(records(*history_results(newest=(31.0, 31.4, 31.2))))
    assert not any("contention rule was off" in n for n in s.newest["notes"])


def test_scaling_now_uses_each_configurations_newest_segment():
    from bench.history.scaling import scaling_rows

    ddp = []
    # faster from run 6 (with 5 a side a perfect split is 2 orderings in 252: p ~ 0.008, too close to 1 %)
    for i, fit in enumerate([20.0, 20.2, 19.9, 20.1, 20.0, 20.1, 12.1, 12.0, 12.2, 12.1, 11.9, 12.0]):
        env = {**CPU, "git_commit": "aaa" if i < 6 else "ccc", "git_dirty": False}
        r = result("ddp", [fit], devices=2, env=env, run_id=f"ddp-{i}")
        r["started_utc"] = f"2026-01-01T01:{i:02d}:00+00:00"
        ddp.append(r)
    series = build(records(*history_results(), *ddp))
    [(system, rows, notes)] = scaling_rows(series)
    assert [(r["case"], r["devices"]) for r in rows] == [("baseline", 1), ("ddp", 2)]
    assert rows[1]["samples"] == [12.1, 12.0, 12.2, 12.1, 11.9, 12.0]  # after ddp's change point only
    assert rows[1]["speedup"] == pytest.approx(24.05 / 12.05)  # baseline's newest segment: AFTER
    assert rows[1]["efficiency"] == pytest.approx(24.05 / 12.05 / 2)
    # one configuration only: no curve
    assert scaling_rows(build(records(*history_results()))) == []


def test_add_refuses_a_suite_summary_alone_and_skips_it_beside_the_runs(tmp_path, capsys):
    where = tmp_path / "hist"
    good = _add(tmp_path, history_results()[:2])
    suite = tmp_path / "results" / "suite.json"
    suite.write_text(json.dumps({"benchmarks": []}))
    assert main(["history", "add", str(suite), "--history", str(where)]) == 2
    assert "holds no run of its own" in capsys.readouterr().err
    assert main(["history", "add", *good, str(suite), "--history", str(where)]) == 0
    assert "2 run(s) added; 1 suite.json skipped" in capsys.readouterr().out


def test_a_bad_level_is_bad_input_even_on_an_empty_history(tmp_path, capsys):
    assert main(["history", "--level", "2", "--history", str(tmp_path / "empty")]) == 2
    assert "--level 2" in capsys.readouterr().err
