""""What changed" between two sides of a comparison: the recorded facts that differ.

One pure function, :func:`what_changed`, over the records of each side (:class:`bench.results.records.Record`
or anything with ``environment``, ``config`` and ``world`` dicts); ``compare`` prints its lines under
its table, and history or A/B views can reuse it. A fact is listed when the set of values differs
between the sides; a side with several values shows them all ("a, b").
"""

from __future__ import annotations

from typing import Any, Iterable

from bench.results.baselines import LEGACY_WORK_DEFAULTS, WORK_FIELDS
from bench.results.system import system_of

#: environment fields compared, in the order shown, with their names for users
VERSIONS = {"torch": "torch", "lightning": "Lightning", "torch_cuda_build": "CUDA build", "cuda_driver": "driver",
            "nccl": "NCCL", "cudnn": "cuDNN", "python": "Python", "torchvision": "torchvision",
            "cpu_capability": "torch CPU kernels"}
#: packages named by VERSIONS already (``environment.packages`` keys, lower case)
_NAMED = {"torch", "lightning", "torchvision"}
#: image identity (issue 29 adds fields named container_* / image_*) and the source commit
IDENTITY = {"container_runtime": "container runtime", "container_image": "image", "git_commit": "commit",
            "git_dirty": "uncommitted changes"}


def _values(sides: Iterable[Any], get) -> list[str]:
    """Distinct values of one fact over the records of a side, as text, in first-seen order ("?" = unknown)."""
    seen: list[str] = []
    for r in sides:
        value = get(r)
        text = "?" if value is None else ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        if text not in seen:
            seen.append(text)
    return seen


def _facts(envs: list[dict]) -> dict[str, Any]:
    """Fact name -> getter over a record, for every field either side may hold."""
    keys = {k for env in envs for k in env if k.startswith(("container_", "image_"))}
    facts = {name: (lambda r, k=k: (r.environment or {}).get(k)) for k, name in VERSIONS.items()}
    facts.update({IDENTITY.get(k, k): (lambda r, k=k: (r.environment or {}).get(k))
                  for k in [*IDENTITY, *sorted(keys - set(IDENTITY))]})
    facts["nodes"] = lambda r: sorted(set((r.world or {}).get("hostnames") or [])) or None
    system_keys = sorted({k for env in envs for k in (system_of(env) or {})})
    facts.update({k: (lambda r, k=k: (system_of(r.environment) or {}).get(k)) for k in system_keys})
    # a work field missing from an older record had its legacy value (as bench.results.baselines reads it)
    facts.update({f: (lambda r, f=f: {**LEGACY_WORK_DEFAULTS, **r.config}.get(f) if r.config else None)
                  for f in WORK_FIELDS})
    return facts


def _comm(r: Any) -> dict[str, str] | None:
    """NCCL_*/GLOO_* variables the user set (``world.comm_env``: every run records it; None where a record
    does not hold it, e.g. a baseline file's samples)."""
    return (r.world or {}).get("comm_env")


def _library(r: Any) -> dict[str, str] | None:
    """OMP_*, MKL_*, ONEDNN_*, ATEN_*, ... variables (``environment.library_env``; None, unknown, in a
    result older than that field)."""
    return (r.environment or {}).get("library_env")


def _keyed(now: list[Any], ref: list[Any], table, label: str, missing: str, skip: set[str] = set(),
           both: bool = False) -> dict:
    """Fact name -> getter for each entry of a recorded table (``table(record)``: a dict or None) on either
    side; an entry absent from a recorded table reads ``missing``, a table not recorded "?". With ``both``,
    nothing unless each side recorded the table (hundreds of packages "? -> x" would say nothing)."""
    if both and not all(any(table(r) is not None for r in side) for side in (now, ref)):
        return {}
    names = sorted({k for r in [*now, *ref] for k in (table(r) or {})} - skip, key=str.lower)
    return {f"{label}{k}": (lambda r, k=k: None if table(r) is None else table(r).get(k, missing)) for k in names}


def what_changed(now: list[Any], ref: list[Any]) -> list[str]:
    """Lines "NAME: REF -> NOW" for each recorded fact whose values differ between the sides.

    Facts: versions (:data:`VERSIONS`, with the torch CPU kernels in use), image identity and commit
    (:data:`IDENTITY`, and any ``container_*``/``image_*`` field), node names, the "same system" facts
    (:func:`bench.results.system.system_of`), the work fields (``WORK_FIELDS``), the environment
    variables that steer the libraries (``NCCL_ALGO: unset -> Ring``) and every other installed package
    (``package numpy: 2.3.1 -> 2.3.2``, from ``environment.packages``). A fact unknown on both sides is
    skipped; unknown on one side shows as "?".
    """
    envs = [r.environment for r in [*now, *ref] if r.environment]
    facts = {**_facts(envs), **_keyed(now, ref, _comm, "", "unset", both=True),
             **_keyed(now, ref, _library, "", "unset"),
             **_keyed(now, ref, lambda r: (r.environment or {}).get("packages"), "package ", "not installed",
                      _NAMED, both=True)}
    lines = []
    for name, get in facts.items():
        a, b = _values(ref, get), _values(now, get)
        if set(a) != set(b):  # (the same values in another order are no change)
            lines.append(f"{name}: {' | '.join(a)} -> {' | '.join(b)}")
    return lines


def what_changed_by_case(now: list[Any], ref: list[Any]) -> list[str]:
    """:func:`what_changed` case by case (records of one case against the same case's), for the cases on
    both sides: a line true of every such case once, a line of some cases only prefixed with them
    (``ddp: NCCL_ALGO: unset -> Ring``), so a fact of one case is neither pooled with the others'
    ("unset | Ring") nor lost. Without a case on both sides: :func:`what_changed` of all records."""
    cases = [c for c in dict.fromkeys(r.case for r in now) if any(r.case == c for r in ref)]
    if not cases:
        return what_changed(now, ref)
    per = {c: what_changed([r for r in now if r.case == c], [r for r in ref if r.case == c]) for c in cases}
    lines = list(dict.fromkeys(line for c in cases for line in per[c]))
    common = [line for line in lines if all(line in per[c] for c in cases)]
    return common + [f"{', '.join(c for c in cases if line in per[c])}: {line}" for line in lines if line not in common]
