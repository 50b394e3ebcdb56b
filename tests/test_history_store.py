"""The history store under concurrent writers (bench.history.store): several processes add runs to one
history at once, one of them killed (SIGKILL) in the middle of writing a record, while a reader lists the
history over and over. Every finished run is there once, nothing is half-written, the reader never fails.
Bounded (every process has a timeout) and checked for leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.history import store
from tests.results_factory import result

REPO = Path(__file__).resolve().parents[1]

WRITER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bench.history import store
from tests.results_factory import result
where, name, n, slow = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "slow"
if slow:  # write half a record, say so, then hang: the parent kills this process mid-write
    real_dump = json.dump
    def half_dump(obj, f, **kw):
        text = json.dumps(obj, **kw)
        f.write(text[: len(text) // 2]); f.flush()
        print("writing", flush=True)
        time.sleep(120)
    store.json.dump = half_dump
for i in range(n):
    for run_id in (f"{name}-{i}", "shared-run"):  # every writer also races to add one common run
        r = result("baseline", [20.0 + i / 10], run_id=run_id)
        r["started_utc"] = f"2026-01-01T00:00:{i:02d}+00:00"
        store.add([(r, name)], __import__("pathlib").Path(where))
    print(f"done {name}-{i}", flush=True)
"""

READER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from bench.history import store
from pathlib import Path
where, stop = Path(sys.argv[2]), Path(sys.argv[3])
reads = 0
while True:  # at least one read, then until the writers are done
    entries, skipped = store.load(where)
    assert not skipped, skipped  # a half-written or foreign file would be skipped with a line
    for e in entries:
        assert e["result"]["metrics"]["fit_s"] > 0
    reads += 1
    if stop.exists():
        break
print(f"reads {reads}", flush=True)
"""


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, str(REPO), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_concurrent_writers_one_killed_mid_write_and_a_reader(tmp_path):
    where, stop = tmp_path / "history", tmp_path / "stop"
    readers = [_start(READER, str(where), str(stop)) for _ in range(2)]  # two: they also race to rebuild the index
    writers = [_start(WRITER, str(where), f"w{k}", "15", "fast") for k in range(4)]
    victim = _start(WRITER, str(where), "victim", "3", "slow")
    procs = [*readers, *writers, victim]
    try:
        assert victim.stdout.readline().strip() == "writing"  # its first record is half written now
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        outs = [w.communicate(timeout=300) for w in writers]
        assert all(w.returncode == 0 for w in writers), [o[1][-2000:] for o in outs]
        stop.touch()
        for reader in readers:
            out, err = reader.communicate(timeout=120)
            assert reader.returncode == 0, err[-2000:]
            assert int(out.split()[-1]) >= 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    done = {line.split()[1] for o in outs for line in o[0].splitlines() if line.startswith("done ")}
    assert len(done) == 4 * 15
    entries, skipped = store_load(where)
    ids = [e["result"]["run_id"] for e in entries]
    assert skipped == []
    assert sorted(ids) == sorted(done | {"shared-run"})  # each finished run once; the killed one's is absent
    assert all(not n.startswith("victim") for n in ids)
    hidden = [p.name for p in (where / "runs").iterdir() if p.name.startswith(".")]
    assert len(hidden) == 1 and hidden[0].endswith(".tmp")  # the killed writer's temporary file, never listed
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(where) in " ".join(p.info["cmdline"] or [])]


def store_load(where: Path):
    from bench.history import store

    entries, skipped = store.load(where)
    assert json.loads((where / "index.json").read_text())["version"] == store.INDEX_VERSION
    return entries, skipped


def test_temporary_files_of_writers_killed_over_a_day_ago_are_removed_by_the_next_add(tmp_path):
    runs = tmp_path / "history" / "runs"
    runs.mkdir(parents=True)
    old, young = runs / ".dead-writer.json.abc.tmp", runs / ".live-writer.json.def.tmp"
    for path in (old, young):
        path.write_text('{"half": ')
    day_ago = time.time() - store.STALE_TMP_S - 60
    os.utime(old, (day_ago, day_ago))
    store.add([(result("baseline", [10.0], run_id="after-cleanup"), "test")], tmp_path / "history")
    assert not old.exists() and young.exists()  # a writer may be between its write and its link right now
    assert [e["result"]["run_id"] for e in store.load(tmp_path / "history")[0]] == ["after-cleanup"]
