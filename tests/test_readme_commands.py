"""Every command line the README and docs/*.md show, run exactly as written, against a real run folder.

Command lines are taken from fenced code blocks (joined at trailing backslashes, `# comments`
dropped) and from inline code that starts with a command. A command is recognised however it is
written: `cifar-bench ...`, `.venv/bin/cifar-bench ...`, `python -m bench ...` (also after
`source .venv/bin/activate`). The analysis commands (`--help`, `table`, `compare`, `report`,
`baseline record`) run in a temporary folder holding a copy of tests/fixtures/run-rounds3 as
`runs/bench-<time>/` (and under any other `runs/<name>/` a command names), with the shipped
baselines copied to a private folder (BENCH_BASELINES), so the repository is never written.
Optional parts in brackets (`[--tolerance 10]`) are left out; synopsis lines with placeholders
(`RESULTS...`, `{a,b}`, `NAME`, `a|b`) are not commands and are skipped, as are lines that train or
need Slurm, containers or the network (other tests cover them), each with its reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.results_factory import FIXTURES, REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ANALYSIS = ("table", "compare", "report", "baseline", "--help", "-h")
PREFIX = re.compile(r"^(?:\S*bin/)?(?:cifar-bench|python3? -m bench)(?=\s|$)")
# a re-recording of a shipped baseline (the README says how cpu-2core-smoke was made): refused by design
SHIPPED = re.compile(r"baseline record .*--name (a100-2node|cpu-2core-smoke)\b(?!.*--force)")


def _lines(text: str) -> list[str]:
    out, inside, pending = [], False, ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if inside:
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            out.append(re.sub(r"\s+#\s.*$", "", line).strip())
        else:
            out += [span.strip() for span in re.findall(r"`([^`]+)`", raw)]
    return [line for line in out if PREFIX.match(line)]


def commands() -> list[tuple[str, str]]:
    """(where, command line) of every cifar-bench command in the docs, in order, without duplicates."""
    seen, out = set(), []
    for doc in DOCS:
        for line in _lines(doc.read_text()):
            if line not in seen:
                seen.add(line)
                out.append((doc.name, line))
    return out


def skip_reason(line: str) -> str | None:
    rest = PREFIX.sub("", line, count=1).strip()
    words = rest.split()
    if re.search(r"\.\.\.|\{|\}|\b[A-Z]{3,}\b|(?<!\|)\|(?!\|)", re.sub(r"\[[^\]]*\]", "", rest)):
        return "a synopsis with placeholders, not a command line"
    if not words:
        return "names the program, not a command line"
    if "--help" in words or "-h" in words:
        return None
    if words[0] not in ANALYSIS:
        return f"`{words[0]}` trains, stages data or needs Slurm/containers/network (other tests)"
    if SHIPPED.search(line):
        return "re-records a shipped baseline: refused without --force by design (tests/test_records.py)"
    return None


CASES = commands()


def test_the_docs_show_analysis_commands():
    runnable = [line for _, line in CASES if skip_reason(line) is None]
    assert any(" table " in f" {line} " for line in runnable), CASES
    assert any(" compare " in f" {line} " for line in runnable) and any(" report " in f" {line} " for line in runnable)


@pytest.mark.parametrize("where, line", CASES, ids=[f"{w}:{l[:60]}" for w, l in CASES])
def test_command_runs_as_written(where, line, tmp_path):
    reason = skip_reason(line)
    if reason:
        pytest.skip(reason)
    shutil.copytree(FIXTURES / "run-rounds3", tmp_path / "runs" / "bench-20261129T225600Z")
    for name in set(re.findall(r"runs/([\w.-]+)/", line)) - {"bench-*"}:
        shutil.copytree(FIXTURES / "run-rounds3", tmp_path / "runs" / name, dirs_exist_ok=True)
    shutil.copytree(REPO / "baselines", tmp_path / "baselines")
    venv_bin = REPO / ".venv" / "bin"
    (tmp_path / ".venv").symlink_to(REPO / ".venv")  # `.venv/bin/cifar-bench` as written
    env = {**os.environ, "BENCH_BASELINES": str(tmp_path / "baselines"),
           "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = re.sub(r"\s*\[[^\]]*\]", "", line)  # optional parts left out
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{where}: {command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert sorted(p.name for p in (tmp_path / "baselines").iterdir())[:2] == ["a100-2node.json", "cpu-2core-smoke.json"]
