"""``cifar-bench sweep``: run one case over a list of world sizes, write one result per point and a summary.

    cifar-bench sweep --case ddp --devices 1,2,3 --data synthetic [--scaling strong|weak] [--repeats 3] [run options]
    cifar-bench sweep --from-results runs/slurm-123/*.json --out runs/slurm-123     # summary only (slurm/scaling.sh)

Locally every point is ``python -m bench run ... --devices N`` in a fresh process (Lightning's
launcher starts local ranks only, so points on more than one node need Slurm: ``sbatch
slurm/scaling.sh`` runs each point as its own ``srun`` step and then the summary). Repeats are
interleaved (repeat 1 of every point, then repeat 2, ...), so that slow drift of the machine does
not land on one point. The output folder (``--out``, default ``runs/sweep-<case>-<UTC time>``)
receives one result JSON per run and ``sweep.json`` (format below), ``sweep.md`` and ``sweep.png``
(:mod:`bench.scaling.sweep_plot`). Figures: :mod:`bench.scaling.figures`. Exit status: the worst run's, in the
order 4 (interrupted) > 1 (failed) > 3 (sanity) > 2 (bad input) > 0 (docs/exit-codes.md).

``sweep.json``: ``{"schema": "cifar-bench/sweep", "schema_version": 1, "created_utc", "scaling_modes",
"lr_rule", "reference", "points": [see bench.scaling.figures.summarize_point + speedup, efficiency,
weak_efficiency], "results": [paths]}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.core.config import ConfigError
from bench.core.exitcodes import ExitCode, worst
from bench.core.files import folder_argument

SWEEP_SCHEMA = "cifar-bench/sweep"  # the schema of sweep.json


class _Into:
    """Lets the ``run`` parser's builder add its options to the sweep's parser (same options as ``run``)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def add_parser(self, *_args, **_kwargs) -> argparse.ArgumentParser:
        return self.parser


def add_parser(sub) -> None:
    """Register ``sweep`` on the ``cifar-bench`` subparsers: every ``run`` option, plus the sweep's own."""
    from bench.run.command import add_parser as add_run_parser

    p = sub.add_parser("sweep", conflict_handler="resolve",
                       help="run a case over several world sizes (strong or weak scaling) and summarise")
    add_run_parser(_Into(p))
    run_actions = [(a.dest, a.option_strings[0], type(a).__name__) for a in p._actions if a.option_strings
                   and a.dest not in ("help", "devices", "num_nodes", "repeats", "out_dir")]
    p.add_argument("--devices", type=_int_list, help="comma list of devices per point, e.g. 1,2,3 (one node)")
    p.add_argument("--points", type=_point_list,
                   help="comma list of NODESxDEVICES_PER_NODE, e.g. 1x1,1x2,2x1,2x2 (more than one node: Slurm only)")
    p.add_argument("--repeats", type=int, default=1, help="runs per point (interleaved); fit_s spread per point")
    p.add_argument("--out", dest="out_dir", type=folder_argument,
                   help="folder for the results and the summary (default runs/sweep-CASE-TIME)")
    p.add_argument("--from-results", nargs="+", type=Path, metavar="RESULT",
                   help="only write the summary of these per-run results (slurm/scaling.sh)")
    p.add_argument("--mark-interrupted", metavar="REASON",
                   help="record each of --points as interrupted with REASON (slurm/scaling.sh, time limit)")
    p.add_argument("--check-only", action="store_true",
                   help="only check every point's configuration, run nothing (slurm/scaling.sh, before launch)")
    p.set_defaults(_run_actions=run_actions)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers such as 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"devices must be integers >= 1, got {text!r}")
    return values


def _point_list(text: str) -> list[tuple[int, int]]:
    try:
        points = [tuple(int(x) for x in item.lower().split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        points = []
    if not points or any(len(p) != 2 or min(p) < 1 for p in points):
        raise argparse.ArgumentTypeError(f"expected NODESxDEVICES items such as 1x1,1x2,2x2, got {text!r}")
    return points  # type: ignore[return-value]


def run_argv(args: argparse.Namespace) -> list[str]:
    """The ``cifar-bench run`` options given to the sweep, as command-line words (geometry and --out apart)."""
    words: list[str] = []
    for dest, option, kind in args._run_actions:
        value = getattr(args, dest, None)
        if value is None or (kind == "_StoreTrueAction" and not value):
            continue
        if kind == "BooleanOptionalAction":
            words.append(option if value else "--no-" + option[2:])
        elif kind == "_StoreTrueAction":
            words.append(option)
        else:
            words += [option, str(value)]
    return words


def points_of(args: argparse.Namespace) -> list[tuple[int, int]]:
    """The sweep's ``(nodes, devices per node)`` points, in the given order.

    Raises:
        ConfigError: --num-nodes, neither or both of --devices and --points, or a repeated point.
    """
    if args.num_nodes is not None:
        raise ConfigError("a sweep takes its nodes from --points NODESxDEVICES (e.g. 1x2,2x2), not --num-nodes")
    if bool(args.devices) == bool(args.points):
        raise ConfigError("give the points: --devices 1,2,4 (one node) or --points 1x1,1x2,2x2 (NODESxDEVICES)")
    points = args.points or [(1, d) for d in args.devices]
    if len(set(points)) != len(points):
        raise ConfigError(f"a point is listed twice in {points}: use --repeats for repeated runs")
    return points


def _point_config(args: argparse.Namespace, nodes: int, devices: int):
    from bench.run.command import run_config

    return run_config(argparse.Namespace(**{**vars(args), "devices": devices, "num_nodes": nodes}))


def _is_sweep_summary(path: Path) -> bool:
    """True when ``path`` is a sweep.json this command wrote (schema ``cifar-bench/sweep``)."""
    try:
        return json.loads(path.read_text()).get("schema") == SWEEP_SCHEMA
    except (OSError, ValueError, AttributeError):
        return False  # read_records says what is wrong with it


def run(args: argparse.Namespace) -> int:
    """The ``sweep`` command (see the module docstring); returns the exit status."""
    if args.from_results:
        from bench.results.reading import read_records

        # the sweep's own summary (sweep.json) is what a glob of its folder also matches: it is an
        # output of this command, not a run
        paths = [p for p in args.from_results if not _is_sweep_summary(Path(p))]
        try:
            results = [r.result for r in read_records(paths)]  # each run once, whatever the globs
        except ValueError as err:  # a file that is no result: bad input (exit 2), as in `table`
            raise ConfigError(str(err)) from None
        return _summarise(results, Path(args.out_dir or Path(args.from_results[0]).parent))
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    points = points_of(args)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out_dir or f"runs/sweep-{args.case}-{stamp}")
    args.out_dir = str(out)
    configs = {p: _point_config(args, *p) for p in points}  # every point valid before anything runs
    if args.check_only:
        print(f"sweep: {len(points)} point(s) valid: {', '.join(f'{n}x{d}' for n, d in points)}")
        return 0
    if args.mark_interrupted:
        import uuid

        from bench.run.runner import record_status

        for (nodes, devices), config in configs.items():
            run_id = f"{config.case}-{config.scaling}-{nodes}x{devices}-interrupted-{uuid.uuid4().hex[:6]}"
            print(f"result: {record_status(config, 'interrupted', args.mark_interrupted, run_id)['path']}")
        return 0
    if any(nodes > 1 for nodes, _ in points) and "SLURM_JOB_ID" not in os.environ:
        raise ConfigError("points on more than one node need Slurm (Lightning starts local ranks only): "
                          "sbatch slurm/scaling.sh")
    return _run_points(args, points, out, stamp)


def _run_points(args: argparse.Namespace, points: list[tuple[int, int]], out: Path, stamp: str) -> int:
    from bench.results.resultfile import load_result, result_path

    codes, results = [], []
    for r in range(args.repeats):  # interleaved: every point once per repeat
        for nodes, devices in points:
            run_id = f"{args.case}-{args.scaling or 'strong'}-{nodes}x{devices}-r{r}-{stamp}"
            cmd = [sys.executable, "-m", "bench", "run", *run_argv(args), "--devices", str(devices),
                   "--num-nodes", str(nodes), "--out", str(out)]
            print(f"sweep: point {nodes}x{devices}, repeat {r + 1}/{args.repeats}: {' '.join(cmd[1:])}", flush=True)
            codes.append(subprocess.run(cmd, env={**os.environ, "BENCH_RUN_ID": run_id}).returncode)
            if (path := result_path(out, run_id)).exists():
                results.append(load_result(path))
    status = _summarise(results, out) if results else ExitCode.FAILED
    return worst(codes + [status])


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``sweep.json`` record of a set of per-run results (see the module docstring)."""
    from bench.results.resultfile import utc_now
    from bench.scaling.figures import LR_RULE, summarize

    points = summarize(results)
    modes = sorted({p["scaling"] for p in points})
    return {"schema": SWEEP_SCHEMA, "schema_version": 1, "created_utc": utc_now(), "scaling_modes": modes,
            "lr_rule": LR_RULE if "weak" in modes else "strong scaling: the same lr at every point",
            "reference": "the 1-device, 1-node point of the same case and scaling mode (T1: its median fit_s)",
            "points": points, "results": [r.get("path") or r.get("run_id") for r in results]}


def _summarise(results: list[dict[str, Any]], out: Path) -> int:
    from bench.core.files import atomic_open
    from bench.results.resultfile import write_json_atomic
    from bench.scaling.figures import format_table
    from bench.scaling.sweep_plot import plot_sweep

    record = summary(results)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, out / "sweep.json")
    chart = plot_sweep(record["points"], out / "sweep.png", results)
    with atomic_open(out / "sweep.md", "w") as f:
        f.write(markdown(record, chart.name if chart else None))
    print(format_table(record["points"], "simple"))
    print(f"sweep: {out / 'sweep.json'}, {out / 'sweep.md'}" + (f", {chart}" if chart else ""))
    return 0 if any(p["valid"] for p in record["points"]) else ExitCode.FAILED


def markdown(record: dict[str, Any], chart: str | None) -> str:
    """``sweep.md``: the table, how the figures are defined, and the chart."""
    from bench.scaling.figures import format_table

    lines = ["# Scaling sweep", "", format_table(record["points"]), "",
             "Fit: median `fit_s` over the valid runs of the point, [min-max]; CV over them. Strong: speedup "
             "T1/TN and efficiency speedup/N; weak: efficiency T1/TN (speedup does not apply; accuracy is not "
             "compared across points). Data wait / compute / all-reduce: share of the median step of the last "
             "epoch (exposed all-reduce only). Reference: " + record["reference"] + ".",
             "", f"Learning rate: {record['lr_rule']}.", ""]
    if chart:
        lines += [f"![scaling]({chart})", ""]
    return "\n".join(lines)


def report_section(results: list[dict[str, Any]], out: Path) -> list[str]:
    """``cifar-bench report``'s scaling section: when a case ran at several world sizes (a sweep, or
    results of several sweeps' points), the sweep table and ``out/scaling.png``; else [] (nothing written).

    Points are never pooled (:func:`bench.scaling.figures.point_key`); the chart shows the first scaling mode.
    """
    from bench.scaling.figures import format_table, summarize
    from bench.scaling.sweep_plot import plot_sweep

    points = summarize([r for r in results if r.get("status") != "skipped"])
    per_case: dict[tuple, int] = {}
    for p in points:
        per_case[(p["case"], p["scaling"])] = per_case.get((p["case"], p["scaling"]), 0) + 1
    points = [p for p in points if per_case[(p["case"], p["scaling"])] > 1]
    if not points:
        return []
    mode = points[0]["scaling"]
    chart = plot_sweep([p for p in points if p["scaling"] == mode], out / "scaling.png", results)
    return ["", "## Scaling", "", format_table(points), "",
            f"{mode.capitalize()} scaling against the 1-device point of the same case "
            "(strong: speedup T1/TN and efficiency speedup/N; weak: efficiency T1/TN), see docs/scaling.md.",
            "", f"![scaling]({chart.name})"]
