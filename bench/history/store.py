"""The history store: every run of a system kept, one atomic file per run, an index rebuilt on read.

Where: ``$BENCH_HISTORY`` if set, else ``$XDG_DATA_HOME/cifar-bench/history`` (default
``~/.local/share/cifar-bench/history``; on a cluster the home folder is shared by every node).

Why files and not SQLite: many Slurm jobs finish at once and write to one history on a shared
(NFS, Lustre) file system, where SQLite's file locks are unreliable. Each run is one file
``runs/<run id>-<hash>.json``, written to a temporary name in the same folder, fsynced and linked to
its final name (:func:`bench.core.files.atomic_open`, ``exclusive``): a writer killed mid-write
leaves at most a hidden ``.*.tmp`` file that readers ignore, never a partial record, and two
writers of one run id cannot both win (the first is kept). Nothing is ever locked. Readers list
``runs/`` and rebuild ``index.json`` (a cache of the parsed files keyed by name, size and
modification time, so a read opens only new files); a reader on another node may lag behind by
NFS attribute caching (seconds), never see half a file.

An entry: ``{"schema": "cifar-bench/history-entry", "schema_version": 1, "added_utc", "source",
"result"}`` with ``result`` the run's result JSON as written (failed, interrupted, tainted runs
included: they are kept, marked by :func:`bench.results.records.problem_of`, never a figure).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bench.core.files import atomic_open
from bench.results.reading import check_result
from bench.results.records import Record, from_result
from bench.results.resultfile import utc_now

ENV = "BENCH_HISTORY"  # moves the history; "off" turns the automatic adding of make bench / the suite off
ENTRY_SCHEMA = "cifar-bench/history-entry"
ENTRY_VERSION = 1
INDEX_VERSION = 1


def default_root() -> Path:
    """``$XDG_DATA_HOME/cifar-bench/history`` (``~/.local/share/cifar-bench/history``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cifar-bench" / "history"


def root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The history folder: ``explicit``, else ``$BENCH_HISTORY``, else :func:`default_root`; None when
    ``$BENCH_HISTORY`` is ``off`` (nothing is added automatically)."""
    if explicit:
        return Path(explicit)
    value = os.environ.get(ENV, "")
    if value.lower() == "off":
        return None
    return Path(value) if value else default_root()


def entry_name(run_id: str) -> str:
    """A safe file name for a run id: its harmless characters and a hash of the whole id."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:80].lstrip(".")
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:12]}.json"


def read_result_file(path: str | Path) -> dict[str, Any]:
    """A per-run result from a file, checked (:func:`bench.results.reading.check_result`).

    Raises:
        ValueError: unreadable, not JSON, not a cifar-bench per-run result, or without a run id.
    """
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read a result ({err}); pass per-run result JSON files") from err
    if isinstance(obj, dict) and isinstance(obj.get("benchmarks"), list):
        raise ValueError(f"{path}: a suite file, not a per-run result: pass the per-run files beside it "
                         "(runs/latest/*.json but suite.json)")
    result = check_result(obj, str(path))
    if not isinstance(result.get("run_id"), str) or not result["run_id"]:
        raise ValueError(f"{path}: the result has no run_id; the file is damaged, re-run the case")
    return result


@dataclass(frozen=True)
class Added:
    """What :func:`add` did: run ids ``added`` and those ``already`` in the history (kept as they were)."""

    added: tuple[str, ...]
    already: tuple[str, ...]


STALE_TMP_S = 24 * 3600.0  # s: a writer links its temporary file within seconds; one this old was killed


def remove_stale_tmp(runs: Path, now: float | None = None) -> int:
    """Delete the hidden ``.*.tmp`` files in ``runs`` last modified more than :data:`STALE_TMP_S` ago
    (left by writers killed mid-write; readers never read them). Returns how many went; a file that
    vanished or cannot be removed (another writer's cleanup, permissions) is left to the next add."""
    now = time.time() if now is None else now
    gone = 0
    for path in runs.glob(".*.tmp"):
        try:
            if now - path.stat().st_mtime > STALE_TMP_S:
                path.unlink()
                gone += 1
        except OSError:
            continue
    return gone


def add(results: Iterable[tuple[dict[str, Any], str]], where: Path) -> Added:
    """Add (result, source) pairs to the history at ``where``; each result already checked.

    A run id already present keeps its first entry (a second copy, e.g. a re-added file, changes
    nothing). Temporary files of writers killed over a day ago are removed (:func:`remove_stale_tmp`).
    Raises OSError when the folder cannot be written (bench.core.files.DiskFullError when full).
    """
    runs = where / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(runs)
    added, already = [], []
    for result, source in results:
        entry = {"schema": ENTRY_SCHEMA, "schema_version": ENTRY_VERSION, "added_utc": utc_now(),
                 "source": source, "result": result}
        try:
            with atomic_open(runs / entry_name(result["run_id"]), "w", exclusive=True) as f:
                json.dump(entry, f, indent=1, default=str)
            added.append(result["run_id"])
        except FileExistsError:
            already.append(result["run_id"])
    return Added(tuple(added), tuple(already))


def _entry(path: Path) -> dict[str, Any]:
    """A stored entry, checked; ValueError for a foreign or damaged file."""
    obj = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(obj, dict) or obj.get("schema") != ENTRY_SCHEMA or obj.get("schema_version") != ENTRY_VERSION:
        raise ValueError(f"{path.name}: not a cifar-bench history entry (version {ENTRY_VERSION})")
    check_result(obj.get("result"), str(path))
    return obj


def load(where: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every entry of the history at ``where`` (file order), and a line per file that is skipped.

    The index is rebuilt from the folder: files listed with the same size and modification time
    are taken from it, others are read. A file that is not a history entry (put there by hand) is
    skipped with a line saying so; a reader never fails on the store's own files. The index is
    rewritten atomically when it changed (skipped where the folder is read-only).
    """
    runs, index_path = where / "runs", where / "index.json"
    try:
        cached = json.loads(index_path.read_text(encoding="utf-8"))
        cached = cached["files"] if cached.get("version") == INDEX_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        cached = {}
    files, skipped, entries = {}, [], []
    names = sorted(p.name for p in runs.glob("*.json") if not p.name.startswith(".")) if runs.is_dir() else []
    for name in names:
        try:
            st = (runs / name).stat()
            key = [st.st_size, st.st_mtime_ns]
            hit = cached.get(name)
            entry = hit["entry"] if isinstance(hit, dict) and hit.get("key") == key else _entry(runs / name)
        except FileNotFoundError:
            continue  # removed by hand while listed
        except (OSError, ValueError) as err:
            skipped.append(f"skipped {runs / name}: {err}")
            continue
        files[name] = {"key": key, "entry": entry}
        entries.append(entry)
    if files.keys() != cached.keys() or any(files[n]["key"] != cached[n].get("key") for n in files):
        try:
            with atomic_open(index_path, "w") as f:
                json.dump({"version": INDEX_VERSION, "files": files}, f, default=str)
        except OSError:
            pass  # a read-only history (another user's): read it without the cache
    return entries, skipped


def records(entries: list[dict[str, Any]], where: Path) -> list[Record]:
    """The records of the entries (one per run; invalid and tainted ones carry their ``problem``)."""
    out = []
    for e in entries:
        out += from_result(e["result"], str(where / "runs" / entry_name(e["result"]["run_id"])))
    return out


def add_automatically(results: list[dict[str, Any]], source: str) -> None:
    """Add the results of ``make bench``, the suite or slurm/suite.sh to the history (unless
    ``$BENCH_HISTORY=off``); a failure is one line on stderr, never the run's failure."""
    where = root()
    if where is None or not results:
        return
    try:
        done = add([(check_result(r, source), source) for r in results if r.get("run_id")], where)
        print(f"history: {len(done.added)} run(s) added to {where} (cifar-bench history)", file=sys.stderr)
    except (OSError, ValueError) as err:
        print(f"history: not added to {where}: {err} (set {ENV} to a writable folder)", file=sys.stderr)
