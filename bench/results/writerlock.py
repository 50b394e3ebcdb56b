"""One writer per results folder: a lock file, safe on a shared (NFS) file system.

Two runs writing one folder slow each other, and a suite's ``suite.json`` would be overwritten by
the other's; their results would then read as repeats of one configuration. So ``cifar-bench run``
(and ``--repeats``), the suite and ``make bench`` take ``<folder>/.cifar-bench-writer.lock`` first,
and a second writer is refused at once (exit 2, naming the holder and what to do).

* Taken with ``O_CREAT | O_EXCL`` (atomic on local file systems and on NFS v3 and later); the file
  holds JSON ``{"host", "pid", "started_utc", "command", "token"}``.
* While held, a daemon thread touches the file every :data:`HEARTBEAT_S` seconds (its mtime is the
  heartbeat another host can see).
* Stale (a crashed writer's): on the same host when its pid is dead (or is another process: pid
  reused, told by the process start time); from another host when the heartbeat is older than
  :data:`STALE_AFTER_S` (host clocks may differ by a little; far less than that). A stale lock is
  moved aside (rename: only one taker wins) and the folder taken.
* The processes a holder starts (the suite's runs, Lightning's rank processes, ``--repeats``) inherit
  :data:`ENV` naming the lock's token and write under their parent's lock.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.core.config import ConfigError

LOCK_NAME = ".cifar-bench-writer.lock"
ENV = "BENCH_WRITER_LOCK"  # "<lock path>|<token>" of the holder this process works for
HEARTBEAT_S = 30.0  # seconds between touches of a held lock
STALE_AFTER_S = 600.0  # seconds without a heartbeat after which another host calls a lock stale
DAMAGED_AFTER_S = 10.0  # s: a lock file still empty or not JSON this long after its last write is damaged
#                         (its writer fills it right after creating it; a crash in between, or a hand edit)


class FolderBusy(ConfigError):
    """Another live writer holds the results folder (bad input: exit 2)."""


class FolderUnwritable(ConfigError):
    """The results folder (or its lock file) cannot be created: a file in its path, read-only, full."""


@dataclass(frozen=True)
class Holder:
    """What a lock file says about its writer; ``age_s``: seconds since its last heartbeat."""

    host: str
    pid: int
    started_utc: str
    command: str
    token: str
    process_start: float | None
    age_s: float


def _process_start(pid: int) -> float | None:
    """The start time of process ``pid`` (seconds since the epoch), None when there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def read_holder(path: Path) -> Holder | None:
    """The holder named in the lock file ``path``; None when the file is gone. A file that is not
    the JSON this module writes (being written, or damaged) is an unknown holder of age 0 unless old."""
    try:
        age, text = time.time() - path.stat().st_mtime, path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        age, text = 0.0, ""
    try:
        facts = json.loads(text)
    except ValueError:
        facts = {}
    return Holder(str(facts.get("host", "?")), int(facts.get("pid", -1)), str(facts.get("started_utc", "?")),
                  str(facts.get("command", "?")), str(facts.get("token", "")), facts.get("process_start"), age)


def stale_reason(holder: Holder, host: str | None = None, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why ``holder`` no longer writes (its lock may be taken), or None while it may be alive."""
    if holder.host == "?" and holder.pid < 0 and holder.age_s > DAMAGED_AFTER_S:  # (see read_holder)
        return f"the lock file is empty or damaged and {holder.age_s:.0f} s old"
    if holder.host == (host or socket.gethostname()) and holder.pid > 0:
        start = _process_start(holder.pid)
        if start is None:
            return f"process {holder.pid} on {holder.host} is gone"
        if holder.process_start is not None and abs(start - holder.process_start) > 1.0:
            return f"process {holder.pid} on {holder.host} is another process now (pid reused)"
        return None
    if holder.age_s > stale_after_s:
        return f"no heartbeat from {holder.host} for {holder.age_s:.0f} s (> {stale_after_s:.0f} s)"
    return None


class WriterLock:
    """A held lock on one results folder; :meth:`release` (or the end of the process) gives it back."""

    def __init__(self, path: Path, token: str, previous: str | None = None) -> None:
        # previous: the ENV this process had before (a lock of another folder it holds or inherited,
        # e.g. a suite session's while a test runs `cifar-bench run` in-process): restored on release
        self.path, self.token, self._previous = path, token, previous
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="writer-lock-heartbeat")
        self._beat.start()

    def export(self) -> dict[str, str]:
        """The environment that lets a process this one starts work for this lock (:func:`inherited`)."""
        return {ENV: f"{self.path}|{self.token}"}

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        """Remove the lock file if it is still this one's; idempotent."""
        self._stop.set()
        holder = read_holder(self.path)
        if holder is not None and holder.token == self.token:
            self.path.unlink(missing_ok=True)
        if os.environ.get(ENV, "").endswith(f"|{self.token}"):  # (only this lock's own export)
            if self._previous is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = self._previous


def inherited(folder: str | Path) -> bool:
    """True when this process was started by the holder of ``folder``'s lock (:data:`ENV`)."""
    path, _, token = os.environ.get(ENV, "").partition("|")
    if not token or Path(path) != Path(folder, LOCK_NAME).absolute():
        return False
    holder = read_holder(Path(path))
    return holder is not None and holder.token == token


def acquire(folder: str | Path, command: str) -> WriterLock | None:
    """Take ``folder``'s writer lock (creating the folder), or None when this process works for its
    holder (:func:`inherited`). Exports :data:`ENV` for the processes this one starts.

    Raises:
        FolderBusy: another live writer holds it; the message names it and what to do.
        FolderUnwritable: the folder or its lock file cannot be created.
    """
    if inherited(folder):
        return None
    path = Path(folder, LOCK_NAME).absolute()
    token = uuid.uuid4().hex
    facts = {"host": socket.gethostname(), "pid": os.getpid(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "command": command, "token": token, "process_start": _process_start(os.getpid())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FolderUnwritable(f"results folder {folder}: cannot create it ({err.strerror}); name a writable folder") from err
    for _ in range(3):  # a stale lock moved aside, then one more try (a racing taker may win)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if holder is not None and (why := stale_reason(holder)) is None:
                raise FolderBusy(busy_message(folder, holder)) from None
            if holder is not None:
                _move_aside(path, holder, why)
            continue
        except OSError as err:
            raise FolderUnwritable(f"results folder {folder}: cannot write its lock file ({err.strerror}); "
                              "name a writable folder") from err
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(facts, f)
        previous, os.environ[ENV] = os.environ.get(ENV), f"{path}|{token}"
        return WriterLock(path, token, previous)
    raise FolderBusy(f"results folder {folder}: its lock file {path} keeps changing hands; "
                     "name another folder (e.g. RUNS=runs/mine / --out runs/mine)")


def _move_aside(path: Path, holder: Holder, why: str) -> None:
    """Rename a stale lock aside (only one of several takers succeeds); a lock that changed hands
    since it was judged (another taker's fresh one) is put back where no new one was made."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = read_holder(aside)
    if moved is not None and moved.token != holder.token:
        try:
            os.link(aside, path)  # fails where a newer lock exists already: then that one rules
        except OSError:
            pass
    else:
        print(f"cifar-bench: results folder {path.parent}: took over a stale lock ({why}; it was "
              f"{holder.command!r}, pid {holder.pid} on {holder.host})", flush=True)
    aside.unlink(missing_ok=True)


def busy_message(folder: str | Path, holder: Holder) -> str:
    """The refusal: who writes ``folder`` and what to do."""
    return (f"results folder {folder} is being written by another run: {holder.command!r} (pid {holder.pid} "
            f"on {holder.host}, since {holder.started_utc}); runs sharing a folder slow each other and mix "
            "their results: wait for it to end, or name another folder (make bench RUNS=runs/mine, "
            f"--bench-out, --out); if that process is gone, delete {Path(folder, LOCK_NAME)}")
