"""One writer per results folder (bench.results.writerlock): refusal, staleness, release."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from bench.results import writerlock as wl


@pytest.fixture(autouse=True)
def _no_inherited_lock(monkeypatch):
    monkeypatch.delenv(wl.ENV, raising=False)


def _fake_lock(folder, **facts) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    base = {"host": "elsewhere", "pid": 4242, "started_utc": "2026-01-01T00:00:00Z", "command": "make bench",
            "token": "t0", "process_start": None}
    (folder / wl.LOCK_NAME).write_text(json.dumps({**base, **facts}))


def test_a_second_writer_is_refused_naming_the_first_and_the_lock_is_released(tmp_path, monkeypatch):
    lock = wl.acquire(tmp_path / "runs", "cifar-bench run --case baseline")
    assert wl.inherited(tmp_path / "runs") and wl.acquire(tmp_path / "runs", "child") is None  # its own runs
    monkeypatch.delenv(wl.ENV)  # another writer, not started by the holder
    with pytest.raises(wl.FolderBusy, match=rf"'cifar-bench run --case baseline' \(pid {os.getpid()} on "):
        wl.acquire(tmp_path / "runs", "second")
    lock.release()
    assert not (tmp_path / "runs" / wl.LOCK_NAME).exists()
    wl.acquire(tmp_path / "runs", "third").release()


def test_a_crashed_writer_on_this_host_is_stale(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _fake_lock(tmp_path, host=wl.socket.gethostname(), pid=dead.pid)
    wl.acquire(tmp_path, "after the crash").release()
    assert "took over a stale lock" in capsys.readouterr().out


def test_a_reused_pid_is_stale_a_live_one_is_not():
    me, host = os.getpid(), wl.socket.gethostname()
    start = wl._process_start(me)
    live = wl.Holder(host, me, "?", "x", "t", start, 0.0)
    assert wl.stale_reason(live) is None
    assert "pid reused" in wl.stale_reason(wl.Holder(host, me, "?", "x", "t", start - 100.0, 0.0))


def test_another_hosts_lock_is_obeyed_while_its_heartbeat_is_fresh(tmp_path):
    _fake_lock(tmp_path)
    with pytest.raises(wl.FolderBusy, match="pid 4242 on elsewhere"):
        wl.acquire(tmp_path, "second")
    old = time.time() - wl.STALE_AFTER_S - 60
    os.utime(tmp_path / wl.LOCK_NAME, (old, old))  # the other host stopped beating: crashed
    wl.acquire(tmp_path, "after").release()


def test_release_leaves_a_lock_that_is_no_longer_its_own(tmp_path):
    lock = wl.acquire(tmp_path, "first")
    _fake_lock(tmp_path, token="someone-else")
    lock.release()
    assert (tmp_path / wl.LOCK_NAME).exists()


def test_an_unwritable_folder_is_bad_input(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(wl.FolderUnwritable, match="cannot create it"):
        wl.acquire(tmp_path / "file" / "runs", "x")


def test_an_empty_or_damaged_lock_is_taken_once_it_is_old(tmp_path):
    """From a trial: an empty lock file blocked the folder for good, blaming "'?' (pid -1 on ?)"."""
    lock = tmp_path / wl.LOCK_NAME
    lock.write_text("")
    with pytest.raises(wl.FolderBusy):  # just created: its writer may be filling it in
        wl.acquire(tmp_path, "second")
    old = time.time() - wl.DAMAGED_AFTER_S - 5
    os.utime(lock, (old, old))
    wl.acquire(tmp_path, "after").release()
    lock.write_text("not json")
    os.utime(lock, (old, old))
    wl.acquire(tmp_path, "again").release()


def test_a_lock_taken_and_released_inside_a_holder_gives_the_holders_export_back(tmp_path):
    """`make test` runs the suite (which holds --bench-out's lock for the session) and tests that run
    `cifar-bench run` in-process into other folders in one pytest: their release must not drop the
    session's export, or the suite's cases are refused as a second writer (CI saw exactly that)."""
    session = wl.acquire(tmp_path / "suite", "pytest suite")
    inner = wl.acquire(tmp_path / "other", "cifar-bench run")
    assert not wl.inherited(tmp_path / "suite")
    inner.release()
    assert wl.inherited(tmp_path / "suite")  # a case started now works for the session's lock
    session.release()
    assert wl.ENV not in os.environ
