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
#: baseline record's refusal of a case too noisy for the tolerance (bench.results.recording.qualify)
NOISY = "Nothing written: record more repeats, or pass --force"
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


def commands(doc: Path) -> list[str]:
    """The cifar-bench command lines of one document, in order, without duplicates."""
    return list(dict.fromkeys(_lines(doc.read_text())))


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


def test_the_docs_show_analysis_commands():
    runnable = [line for doc in DOCS for line in commands(doc) if skip_reason(line) is None]
    for command in ("table", "compare", "report", "baseline record"):
        assert any(f" {command} " in f" {line} " for line in runnable), runnable


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_commands_run_as_written(doc, tmp_path):
    """The document's commands, in its order, in one folder (a baseline recorded by one command can
    be compared against by the next, as a user following the page would)."""
    lines = commands(doc)
    runnable = [line for line in lines if skip_reason(line) is None]
    if not runnable:
        pytest.skip(f"{doc.name} shows no analysis command")
    shutil.copytree(FIXTURES / "run-rounds3", tmp_path / "runs" / "bench-20261129T225600Z")
    for name in {n for line in runnable for n in re.findall(r"runs/([\w.-]+)/", line)} - {"bench-*"}:
        shutil.copytree(FIXTURES / "run-rounds3", tmp_path / "runs" / name, dirs_exist_ok=True)
    shutil.copytree(REPO / "baselines", tmp_path / "baselines")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")  # `.venv/bin/cifar-bench` as written
    env = {**os.environ, "BENCH_BASELINES": str(tmp_path / "baselines"),
           "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    failures = []
    for line in runnable:
        command = re.sub(r"\s*\[[^\]]*\]", "", line)  # optional parts left out
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        if proc.returncode == 2 and " baseline record " in f" {command} " and NOISY in proc.stderr:
            # the fixture's runs were measured on a busy machine (CV ~20 %): refused as documented; the
            # page's later commands need the file, so it is recorded as a user would after reading the message
            proc = subprocess.run(["bash", "-c", command + " --force"], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=120)
        if proc.returncode != 0:
            failures.append(f"{command} -> {proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    skipped = [f"{line[:70]}: {skip_reason(line)}" for line in lines if skip_reason(line)]
    print(f"{doc.name}: ran {len(runnable)}, skipped {len(skipped)}:\n" + "\n".join(skipped))
    assert not failures, "\n\n".join(failures)
    assert {"a100-2node.json", "cpu-2core-smoke.json"} <= {p.name for p in (tmp_path / "baselines").iterdir()}
