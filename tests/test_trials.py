"""The table-making part of the verdict trials (bench.selfcheck.trials) on literal data; the trials
themselves are a documented command, not part of CI (docs/verdict-trials.md)."""

from __future__ import annotations

import pytest

from bench.selfcheck.trials import detectable_table, injected_pct, summary, trial_table


def _row(trial, case, verdict, injected=None, diff=1.0, exit_=0):
    return {"trial": trial, "case": case, "repeats": "5/5", "sd_log": 0.0213, "detectable_pct": 4.56,
            "injected_pct": injected, "diff_pct": diff, "verdict": verdict, "exit": exit_}


ROWS = [_row("identical 1", "baseline (1 device)", "unchanged"),
        _row("identical 1", "ddp (2 devices)", "regression", diff=12.34, exit_=1),
        _row("identical 2", "baseline (1 device)", "inconclusive", diff=-3.0),
        _row("identical 2", "ddp (2 devices)", "faster", diff=-20.0),
        _row("slowdown 1", "baseline (1 device)", "regression", injected=14.56, diff=15.2, exit_=1),
        _row("slowdown 1", "ddp (2 devices)", "inconclusive", injected=14.56, diff=9.0, exit_=1),
        _row("slowdown 2", "baseline (1 device)", "inconclusive", injected=14.0, diff=8.0)]


def test_trial_table_rows_and_counts_against_the_criteria():
    text = trial_table(ROWS)
    assert text.splitlines()[0].startswith("| trial | case | repeats now/base | sd of log fit_s | detectable")
    assert "| identical 1 | ddp (2 devices) | 5/5 | 2.1 % | 4.6 % | - | +12.3 % | regression | 1 |" in text
    assert "| slowdown 1 | baseline (1 device) | 5/5 | 2.1 % | 4.6 % | 14.6 % | +15.2 % | regression | 1 |" in text
    assert summary(ROWS) == [
        "identical pairs: 1 regression(s) in 4 rows of 2 pair(s) (criterion: at most 1 in 20 pairs); "
        "verdicts faster 1, inconclusive 1, regression 1, unchanged 1",
        "injected slowdowns (baseline case): 1 of 2 called a regression (criterion: at least 8 of 10); "
        "verdicts inconclusive 1, regression 1"]
    assert all(f"- {line}" in text for line in summary(ROWS))


def test_detectable_table_at_the_median_spread():
    # median sd 0.05: (t[0.95, 4] + t[0.80, 4]) * 0.05 * sqrt(2/3) -> 13.4 %; 5 a side 9.1 %;
    # 10 a side (1.7341 + 0.8620) * 0.05 * sqrt(0.2) = 0.05805 -> 6.0 %
    text = detectable_table({"baseline": [0.07, 0.03, 0.05], "ddp": [0.2]}, {"baseline": 0.0312, "ddp": None})
    assert "| baseline | 3 | 5.0 % | 13.4 % / 9.1 % / 6.0 % | 3.1 % |" in text
    assert "| ddp | 1 | 20.0 % | 65.2 % / 41.6 % / 26.1 % | - |" in text  # as docs/verdict-trials.md's table


def test_bad_input_is_refused_before_anything_runs(tmp_path, capsys):
    from bench.selfcheck.trials import main

    assert main(["--rounds", "2", "--out", str(tmp_path / "t")]) == 2
    assert "--rounds must be >= 3" in capsys.readouterr().err and not (tmp_path / "t").exists()


def test_the_injected_slowdown_composes_tolerance_and_detectable_change_as_ratios():
    assert injected_pct(10.0, 30.0) == pytest.approx(43.0)  # 1.1 x 1.3 = 1.43, not 40
    assert injected_pct(10.0, 0.0) == pytest.approx(10.0)
    assert injected_pct(10.0, 90.0) == 100.0  # capped
