"""Log noise a user must read past (issue 34, item 6): each line that was dropped, with its input.

Run:  .venv/bin/python -m pytest -q tests/test_log_noise.py   (about 10 s: one pytest start)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("line, shown", [("GPU available: False, used: False", False),
                                         ("TPU available: False, using: 0 TPU cores", False),
                                         ("\N{ELECTRIC LIGHT BULB} Tip: try LitLogger", False),
                                         ("\nDetected KeyboardInterrupt, attempting graceful shutdown ...", False),
                                         ("`Trainer(limit_val_batches=1)` was configured so 1 batch will be used.", True)])
def test_lightning_info_lines_about_nothing_the_result_lacks_are_dropped(line, shown, caplog):
    cli._quiet_inapplicable_notices()
    with caplog.at_level(logging.INFO):
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info(line)
    assert (line in caplog.text) is shown


def test_suite_summary_line_comes_from_rank_0_only(tmp_path):
    """Global rank 1 of a Slurm step running the suite with every case deselected: pytest ran (its exit
    status 5, no tests) and printed no "3 deselected in ..." summary (rank 0 prints pytest's own, once)."""
    env = {**os.environ, "SLURM_STEP_ID": "0", "SLURM_PROCID": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "-k", "no_such_case",
                           "--bench-out", str(tmp_path / "runs")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, proc.stdout + proc.stderr
    assert "deselected" not in proc.stdout + proc.stderr  # once per job step, not once per rank


def test_suite_sh_exit_line_names_every_exit_code():
    from bench.core.exitcodes import ExitCode

    line = next(l for l in (REPO / "slurm" / "suite.sh").read_text().splitlines() if 'echo "suite.sh: exit $worst' in l)
    for code in set(ExitCode) - {ExitCode.NOTHING_JUDGED}:  # (compare's own: the job prints compare's exit apart)
        assert f"{int(code)} " in line, f"exit code {int(code)} ({code.name}) missing from: {line}"
