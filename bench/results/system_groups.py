"""Records split by the system that made them, so that ``table`` and ``report`` never pool two machines.

"Same system" is :func:`bench.results.system.system_of`'s (the hardware ``compare`` checks before a
verdict): a glob over the results of two machines (another CPU or GPU model, another count of
cores or GPUs) gives one row per system, labelled by the fields that differ, and a note saying so.
"""

from __future__ import annotations

import json
from typing import Any

from bench.results.records import Record
from bench.results.system import system_of

UNKNOWN = "system unknown"  # records whose environment does not say (e.g. old baseline files)


#: "same system" facts that differ between the cases of one machine by design (each ddp rank gets its
#: share of the cores): ``compare`` checks them case against the same case; rows are not split by them
PER_CASE = ("loader workers", "torch threads")


def machine_of(record: Record) -> dict | None:
    """The record's machine: ``system_of`` of its environment less :data:`PER_CASE` (None = unknown)."""
    system = system_of(record.environment)
    return None if system is None else {k: v for k, v in system.items() if k not in PER_CASE}


def system_key(record: Record) -> str:
    """A hashable form of the record's machine (:func:`machine_of`); "" when unknown."""
    machine = machine_of(record)
    return "" if machine is None else json.dumps(machine, sort_keys=True, default=str)


def _fits(key: str, home: str) -> bool:
    """Whether a machine (a key) agrees with a home machine on every fact both recorded."""
    a, b = (json.loads(k) if k else {} for k in (key, home))
    return all(a[f] == b[f] for f in set(a) & set(b))


def _text(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def system_labels(records: list[Record]) -> dict[str, str]:
    """Each system key among ``records`` (first seen first) -> its label: the fields that differ between
    the systems, ``[CPU cores=2]``; ``""`` for every key when all records come from one system."""
    # runs that are no figure (a skipped case, a failed run: they record less) make no system of their
    # own beside valid runs; they go where their facts fit (split_by_system)
    keys = list(dict.fromkeys(system_key(r) for r in records if r.valid))
    keys = keys or list(dict.fromkeys(k for r in records if (k := system_key(r)))) or [""]
    if len(keys) < 2:
        return {k: "" for k in keys}
    systems = {k: json.loads(k) if k else None for k in keys}
    known = [s for s in systems.values() if s]
    fields = sorted({f for s in known for f in s if len({json.dumps(t.get(f), default=str) for t in known}) > 1})
    fields = fields or sorted({f for s in known for f in s})  # one known system beside unknown ones: all of it
    return {k: f"[{UNKNOWN}]" if s is None else "[" + ", ".join(f"{f}={_text(s.get(f))}" for f in fields) + "]"
            for k, s in systems.items()}


def split_by_system(records: list[Record], labels: dict[str, str] | None = None) -> list[tuple[list[Record], str]]:
    """``records`` in sets of one system each, each with its label (``labels``: :func:`system_labels` of a
    wider set of records, so that one system has one label everywhere; default: of ``records``)."""
    labels = system_labels(records) if labels is None else labels
    first = next(iter(labels))  # where runs of no system go (see system_labels)
    home = {id(r): k if k in labels else next((h for h in labels if _fits(k, h)), first)
            for r in records for k in [system_key(r)]}
    return [(subset, label) for k, label in labels.items() if (subset := [r for r in records if home[id(r)] == k])]


def mixed_systems_note(records: list[Record]) -> str | None:
    """The warning for results of several systems (None for one): they are never pooled."""
    labels = [label for label in system_labels(records).values() if label]
    if not labels:
        return None
    return (f"these results come from {len(labels)} different systems ({', '.join(labels)}): each has rows of "
            "its own, never pooled; compare runs of one system (pass one machine's files)")
