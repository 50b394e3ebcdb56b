""""Same system": the facts two runs must share for one to be judged against the other.

Hardware: GPU model and GPUs per node, or for a CPU run the CPU model and cores; and the CPU a run
was given (``environment.cores_given``, recorded by :mod:`bench.run.runner` from
:func:`bench.measure.contention.cores_given`): usable cores (affinity capped by the cgroup quota),
loader workers and torch threads per rank. Software versions are deliberately not part of it: a
slower driver or library is what a verdict is for.

Rule for records made before ``cores_given`` existed: a fact recorded on one side only is not
compared (the runs are judged where the other facts allow) and :func:`unchecked` names it, so the
verdict carries a note.
"""

from __future__ import annotations

from typing import Any

#: environment.cores_given keys that are part of "same system", and their names in messages
CORE_FACTS = {"usable_cores": "usable cores", "loader_workers": "loader workers", "torch_threads": "torch threads"}


def system_of(env: dict[str, Any] | None) -> dict[str, Any] | None:
    """The facts that define "same system" (None = hardware unknown): GPU models and GPUs per node, or
    for a CPU run the CPU model and cores; plus the :data:`CORE_FACTS` where recorded (a record
    without a run, e.g. a skipped case, has them as None: not recorded)."""
    if not env or "gpu_count" not in env:
        return None
    if env.get("gpu_count"):
        system = {"GPU model": sorted(set(env.get("gpu_names") or [])), "GPUs per node": env["gpu_count"]}
    else:
        system = {"CPU model": env.get("cpu_model"), "CPU cores": env.get("cpu_count")}
    given = env.get("cores_given") or {}
    system.update({name: given[key] for key, name in CORE_FACTS.items() if given.get(key) is not None})
    return system


def hardware_difference(now_env: dict | None, ref_env: dict | None) -> str | None:
    """Why two environments are not the same system, or None when they are. Facts recorded on one
    side only are not compared (see :func:`unchecked`)."""
    now, ref = system_of(now_env), system_of(ref_env)
    if ref is None:
        return "the baseline's hardware is unknown"
    if now is None:
        return "this run's hardware is not recorded"
    optional = set(CORE_FACTS.values()) - (set(now) & set(ref))  # recorded on one side only: not compared
    diff = [f"{k} {now.get(k)} vs {ref.get(k)}" for k in sorted((set(now) | set(ref)) - optional)
            if now.get(k) != ref.get(k)]
    return "different hardware (" + "; ".join(diff) + ")" if diff else None


def unchecked(now_env: dict | None, ref_env: dict | None) -> list[str]:
    """Names of "same system" facts recorded on one side only (e.g. a baseline recorded before usable
    cores were): not compared, so a verdict says so."""
    now, ref = system_of(now_env) or {}, system_of(ref_env) or {}
    if not now or not ref:
        return []
    return sorted((set(now) ^ set(ref)) & set(CORE_FACTS.values()))
