"""Records: one normalised sample of a run (:class:`Record`), its validity, its group and its work.

A record is one run, or one round of the suite, for every status, so no analysis branches on missing
fields. Validity is derived here, once (:func:`problem_of`): a record is a *figure* only if its status
is ``ok``, its sanity check passed, it was not profiled, no test knob was active and its machine was not
contended. Reading the files that hold records is :mod:`bench.results.reading`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from bench.results.taint import taint_problem

STATUSES = ("ok", "failed", "interrupted", "skipped")
CASE_ORDER = ("baseline", "dp", "ddp")


@dataclass(frozen=True)
class Record:
    """One sample: a run, or one round of a suite benchmark, or one stored baseline sample.

    Times in seconds, throughput images/s, accuracy a fraction. ``devices`` is what splits the
    global batch (ddp: world size, dp: GPUs, baseline: 1); ``nodes`` the nodes used; ``scaling``
    the scaling mode (``strong`` when the result does not say). ``problem`` is why the record is
    not a figure (None for a valid one); ``reason`` is the run's own skip/failure reason.
    """

    run_id: str
    case: str
    status: str
    source: str  # the file it was read from
    origin: str  # "run", "suite" or "baseline"
    fit_s: float | None = None
    throughput_img_s: float | None = None
    test_accuracy: float | None = None
    accuracy_meaningful: bool = True
    devices: int = 1
    nodes: int = 1
    scaling: str = "strong"
    reason: str | None = None
    problem: str | None = None
    test_knobs: dict = field(default_factory=dict)
    profiled: bool = False
    config: dict | None = None
    environment: dict | None = None
    world: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)  # the full result dict (breakdown, ended_utc, ...)
    baseline_name: str | None = None

    @property
    def valid(self) -> bool:
        """True if this record is a benchmark figure."""
        return self.problem is None

    @property
    def group(self) -> tuple[str, int, int, str]:
        """(case, devices, nodes, scaling): records of one group are repeats of one configuration."""
        return (self.case, self.devices, self.nodes, self.scaling)

    @property
    def kind(self) -> str:
        """``valid``, ``skipped`` (not run on this hardware) or ``invalid``."""
        return "valid" if self.valid else "skipped" if self.status == "skipped" else "invalid"


def group_label(group: tuple[str, int, int, str]) -> str:
    """A group as text: ``ddp (4 devices, 2 nodes)``, ``baseline (1 device)``; ``, weak`` when not strong."""
    case, devices, nodes, scaling = group
    text = f"{case} ({devices} device{'s' if devices != 1 else ''}" + (f", {nodes} nodes" if nodes > 1 else "")
    return text + ("" if scaling == "strong" else f", {scaling}") + ")"


def group_key(group: tuple[str, int, int, str]) -> tuple:
    """Sort key of groups: baseline, dp, ddp, then other cases; then devices, nodes."""
    case = group[0]
    return (CASE_ORDER.index(case) if case in CASE_ORDER else len(CASE_ORDER), case, group[1], group[2], group[3])


def by_group(records: Iterable[Record]) -> dict[tuple, list[Record]]:
    """Records grouped by :attr:`Record.group`, groups in :func:`group_key` order."""
    out: dict[tuple, list[Record]] = {}
    for r in records:
        out.setdefault(r.group, []).append(r)
    return dict(sorted(out.items(), key=lambda item: group_key(item[0])))


def devices_used(result: dict[str, Any]) -> int:
    """Devices that split the global batch in a result dict: ddp world size, dp devices, else 1."""
    case, world, config = result.get("case"), result.get("world") or {}, result.get("config") or {}
    if case == "ddp":
        return int(world.get("world_size") or (config.get("devices") or 1) * (config.get("num_nodes") or 1))
    if case == "dp":
        return int(config.get("devices") or world.get("devices_per_node") or 1)
    return 1


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def problem_of(result: dict[str, Any], fit_s: float | None, accept_test_knobs: bool = False) -> str | None:
    """Why a result dict is not a benchmark figure, or None when it is one (the validity rule)."""
    status = result.get("status")
    if status != "ok":
        return f"{status}: {result.get('reason') or 'no reason given'}"
    sanity = result.get("sanity") or {}
    if sanity.get("passed") is not True:
        if not sanity:
            return "no sanity record: cannot tell that training converged"
        acc, floor = (result.get("metrics") or {}).get("test_accuracy"), sanity.get("accuracy_floor")
        return (f"sanity check failed (loss finite: {sanity.get('loss_finite')}, test accuracy "
                f"{'-' if acc is None else f'{acc:.3f}'} vs floor {floor})")
    if result.get("profiled"):
        return "profiled: its times include the profiler's overhead"
    knobs = result.get("test_knobs") or {}
    if knobs and not accept_test_knobs:
        return "test knobs active (" + ", ".join(f"{k}={v}" for k, v in knobs.items()) + "): not a real run"
    if taint := taint_problem(result):  # contended machine (bench.results.taint)
        return taint
    if fit_s is None and (result.get("metrics") or {}).get("optimizer_steps") == 0:
        return "no training step ran (--epochs 0 tests the initial weights): no time to compare"
    if fit_s is None or fit_s <= 0:
        return "no finite fit_s: the result is damaged, re-run the case"
    return None


def _round_figure(metrics: dict, rounds: dict | None, key: str, i: int, n: int) -> float | None:
    """Round ``i`` of ``n``'s ``key`` (throughput, accuracy): from the suite's per-round list when it has
    one of length ``n``, else the result's own figure, which is the last round's."""
    per_round = (rounds or {}).get(key)
    if isinstance(per_round, list) and len(per_round) == n:
        return _finite(per_round[i])
    return _finite(metrics.get(key)) if i == n - 1 else None


def from_result(result: dict[str, Any], source: str, origin: str = "run", accept_test_knobs: bool = False,
                samples: list | None = None, run_ids: list[str] | None = None,
                rounds: dict | None = None) -> list[Record]:
    """Records of one result dict: one per fit_s sample (``samples``, else ``metrics.fit_s_samples``,
    else ``[metrics.fit_s]``; none for a result that did not time anything: then one record).

    ``rounds``: a suite entry's per-round figures (``{"throughput_img_s": [...], "test_accuracy": [...]}``,
    one per sample); without them only the last sample has a throughput and an accuracy."""
    metrics, config = result.get("metrics") or {}, result.get("config") or None
    samples = samples or metrics.get("fit_s_samples") or [metrics.get("fit_s")]
    run_id = str(result.get("run_id") or f"{result.get('case')}@{source}")
    ids = run_ids or ([run_id] if len(samples) == 1 else [f"{run_id}/sample{i}" for i in range(len(samples))])
    world = result.get("world") or {}
    out = []
    for i, (rid, sample) in enumerate(zip(ids, samples)):
        fit = _finite(sample)
        out.append(Record(
            run_id=rid, case=str(result["case"]), status=str(result["status"]), source=source, origin=origin,
            fit_s=fit, throughput_img_s=_round_figure(metrics, rounds, "throughput_img_s", i, len(samples)),
            test_accuracy=_round_figure(metrics, rounds, "test_accuracy", i, len(samples)),
            accuracy_meaningful=bool(metrics.get("accuracy_meaningful", True)),
            devices=devices_used(result),
            nodes=int(world.get("num_nodes") or (config or {}).get("num_nodes") or 1),
            scaling=str((config or {}).get("scaling") or "strong"), reason=result.get("reason"),
            problem=problem_of(result, fit, accept_test_knobs), test_knobs=dict(result.get("test_knobs") or {}),
            profiled=bool(result.get("profiled")), config=config, environment=result.get("environment"),
            world=world, result=result))
    return out


def split_by_work(records: list[Record]) -> list[tuple[list[Record], str]]:
    """Records of one group split into sets that did the same work (:data:`bench.results.baselines.WORK_FIELDS`),
    in the order first seen; each with a label naming its values of the fields that differ between
    the sets (``""`` when all did the same work). Runs without a config join the first set."""
    from bench.results.baselines import work_differences

    sets: list[list[Record]] = []
    for r in records:
        home = next((s for s in sets if not work_differences(s[0].config, r.config)), None)
        home.append(r) if home is not None else sets.append([r])
    if len(sets) < 2:
        return [(s, "") for s in sets]
    fields = sorted({f for s in sets[1:] for f in work_differences(sets[0][0].config, s[0].config)})
    return [(s, "[" + ", ".join(f"{f}={(s[0].config or {}).get(f)}" for f in fields) + "]") for s in sets]


def with_problem(record: Record, problem: str) -> Record:
    """A copy of ``record`` marked as not a figure for ``problem``."""
    return replace(record, problem=problem)
