"""Parity benchmark: the product's baseline case against bare Lightning and a hand-written loop.

    make parity                     # = python -m bench.selfcheck.parity --data $BENCH_DATA --preset cpu --pairs 5 --slice-s 1
    python -m bench.selfcheck.parity --data ../shared/data/cifar10-jpeg.tar.gz --pairs 5 --data-paths device,uint8

Each round runs, per data path, the three sides in fresh processes, in an order rotated from round
to round: ``hand`` (:func:`bench.selfcheck.parity_sides.hand_written`), ``lightning``
(:func:`bench.selfcheck.parity_sides.bare_lightning`) and ``product`` (``python -m bench run --case
baseline``, read back from its result JSON). By default the sides of a round run together, in turns
of ``--slice-s`` seconds (:func:`bench.selfcheck.timeslice.run_sliced`), so that the machine's drifting speed
hits all of them alike; the measure is then images per *median* step time (each side's steps timed
end to end as the product's breakdown ``step_s``; the step that spans another side's turn is an
outlier the median ignores). With ``--slice-s 0`` the sides run one after the other and a second
measure is given, training throughput (images / training seconds, the product's
``throughput_img_s``), which also takes in per-epoch costs and every burst of other load. Within a
round the ratios product/lightning and product/hand are taken; the report gives their median over
the rounds with a 95 % bootstrap confidence interval (scipy.stats.bootstrap, percentile method).
Same work is checked: every run of a data path made the same number of optimizer steps, and every
final test accuracy lies within ``--accuracy-tolerance`` of their median.

Exit status (bench.core.exitcodes): 0 all sides ran and did the same work; 1 a side failed; 2 bad input
(nothing ran); 3 the sides did different work, the runs had fewer than 50 steps, or a turn held fewer
than 50 median steps (the ratios are no figure); 4 stopped by Ctrl-C or SIGTERM (no summary;
no side's process is left). Not a test: targets are printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.config import DATA_ENV, DATA_PATHS, PRESETS, ConfigError, make_config
from bench.core.exitcodes import ExitCode
from bench.selfcheck.parity_report import format_report, summarize
from bench.selfcheck.timeslice import run_sliced

SIDES = ("hand", "lightning", "product")
_TIMEOUT_S = 1800  # one side's process (s); the cpu preset takes ~15-40 s


def side_command(side: str, overrides: dict[str, Any], out: Path, before_tree: str | None = None) -> dict[str, Any]:
    """How one side runs in a fresh process: ``{"args", "env", "cwd"}`` (env/cwd None = this process's).

    ``product`` is ``python -m bench run --case baseline``; ``product_before`` the same from
    ``before_tree`` (another checkout, e.g. before a change); ``hand`` and ``lightning`` are this
    module's ``--side`` child, which writes ``out/<side>.json``.
    """
    if side in ("product", "product_before"):
        # paths absolute: product_before runs in before_tree (python -m puts the working folder first on
        # sys.path), where relative ones would name other folders (its result, then not found here)
        args = [sys.executable, "-m", "bench", "run", "--case", "baseline", "--preset", overrides["preset"],
                "--out", str(out.resolve())]
        for key in ("data", "data_path", "epochs", "train_samples", "test_samples", "cache_dir"):
            value = overrides.get(key)
            if value not in (None, ""):
                if key in ("data", "cache_dir") and value != "synthetic":
                    value = Path(value).expanduser().resolve()
                args += [f"--{key.replace('_', '-')}", str(value)]
        tree = before_tree if side == "product_before" else None
        return {"args": args, "env": {**os.environ, "PYTHONPATH": tree} if tree else None, "cwd": tree}
    args = [sys.executable, "-m", "bench.selfcheck.parity", "--side", side, "--overrides", json.dumps(overrides),
            "--result", str(out / f"{side}.json")]
    return {"args": args, "env": None, "cwd": None}


def _product_result(proc: subprocess.CompletedProcess) -> dict[str, Any]:
    from bench.results.resultfile import load_result

    lines = [ln.split("result: ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("result: ")]
    # exit 3 with a finite loss: only the preset's accuracy floor missed (short runs); same_work judges accuracy
    if proc.returncode not in (ExitCode.OK, ExitCode.SANITY) or not lines:
        raise RuntimeError(f"product run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    r = load_result(lines[-1])
    m = r["metrics"]
    if r["status"] != "ok" or not r["sanity"]["loss_finite"]:
        raise RuntimeError(f"product run {lines[-1]} is {r['status']} (sanity {r['sanity']})")
    epochs = (m.get("step_breakdown") or {}).get("per_rank", [{}])[0].get("epochs", [])  # none with --no-step-breakdown
    step_medians = [e["step_s"]["median"] for e in epochs]
    return {"throughput_img_s": m["throughput_img_s"], "optimizer_steps": m["optimizer_steps"],
            "median_step_s": float(np.median(step_medians)) if step_medians else None,
            "test_accuracy": m["test_accuracy"], "test_correct": m["test_correct"], "test_total": m["test_total"],
            "result": lines[-1]}


def side_result(side: str, proc: subprocess.CompletedProcess, out: Path) -> dict[str, Any]:
    """What a side's finished process measured: ``{"throughput_img_s", "optimizer_steps", "median_step_s",
    "test_accuracy", ...}``.

    Raises:
        RuntimeError: the side's process failed (its stderr's tail in the message).
    """
    if side in ("product", "product_before"):
        return _product_result(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    r = json.loads((out / f"{side}.json").read_text())
    return {**r, "throughput_img_s": r["images"] / r["train_s"]}


def _run_sides(sides: list[str], overrides: dict[str, Any], folder: Path, before_tree: str | None,
               slice_s: float) -> dict[str, dict[str, Any]]:
    """The sides of one round and data path, one after the other (``slice_s`` 0) or time-sliced; results by side."""
    commands = {side: side_command(side, overrides, folder / side, before_tree) for side in sides}
    for side in sides:
        (folder / side).mkdir(parents=True, exist_ok=True)
    envs, cwds = {s: c["env"] for s, c in commands.items()}, {s: c["cwd"] for s, c in commands.items()}
    if slice_s > 0:
        procs = run_sliced({s: c["args"] for s, c in commands.items()}, slice_s, _TIMEOUT_S, envs=envs, cwds=cwds)
    else:  # one after the other, each a single "turn" as long as its timeout: the guard still ends it with this process
        procs = {s: run_sliced({s: c["args"]}, _TIMEOUT_S, _TIMEOUT_S, envs=envs, cwds=cwds)[s] for s, c in commands.items()}
    results = {side: side_result(side, procs[side], folder / side) for side in sides}
    if slice_s > 0:  # a side's wall clock also ran through the others' turns: no images/s figure
        for r in results.values():
            r["throughput_img_s"] = None
    return results


def run_rounds(overrides: dict[str, Any], data_paths: list[str], pairs: int, out: Path, before_tree: str | None = None,
               slice_s: float = 0.0, log=lambda text: print(text, flush=True)) -> dict[str, list[dict[str, Any]]]:
    """``pairs`` rounds; in each, per data path, the sides in an order rotated from round to round, one
    after the other or (``slice_s`` > 0) time-sliced (:func:`bench.selfcheck.timeslice.run_sliced`). Returns runs per path."""
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in data_paths}
    batch = make_config(**overrides).global_batch_size  # images per step: baseline is one device
    for i in range(pairs):
        sides = SIDES + (("product_before",) if before_tree else ())
        order = list(sides[i % len(sides):] + sides[:i % len(sides)])
        for path in (data_paths if i % 2 == 0 else data_paths[::-1]):
            how = f"in turns of {slice_s:g} s" if slice_s > 0 else "one after the other"
            log(f"round {i} {path:>6}: {', '.join(order)}, {how} ...")
            results = _run_sides(order, {**overrides, "data_path": path}, out / f"round{i}" / path, before_tree, slice_s)
            for side in order:
                r = results[side]
                r["median_step_img_s"] = batch / r["median_step_s"] if r.get("median_step_s") else None
                runs[path].append({"side": side, "round": i, **r})
                speed = f"{r['throughput_img_s']:8.0f}" if r["throughput_img_s"] else "       -"
                step = f"{r['median_step_img_s']:8.0f}" if r["median_step_img_s"] else "       -"
                log(f"round {i} {path:>6} {side:>14}: {speed} images/s over epochs, {step} images/s at the median step, "
                    f"{r['optimizer_steps']} steps, test accuracy {r['test_accuracy']:.4f}")
    return runs


def _child(side: str, overrides: dict[str, Any], result: Path) -> int:
    from bench.results.resultfile import write_json_atomic
    from bench.selfcheck.parity_sides import SIDES as FUNCS

    config = make_config(**overrides)
    write_json_atomic(FUNCS[side](config), result)
    return ExitCode.OK


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _at_least(low: float, integer: bool = False):
    """An argparse type: a finite number >= ``low`` (an int when ``integer``)."""
    def parse(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if integer else 'a number'} >= {low:g}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}, got {text!r}")
        return value
    return parse


MIN_SLICE_S = 0.1  # 50 steps of 2 ms: a shorter turn can hold no training step's median


def _slice(text: str) -> float:
    value = _at_least(0)(text)
    if 0 < value < MIN_SLICE_S:
        raise argparse.ArgumentTypeError(f"must be 0 (one after the other) or >= {MIN_SLICE_S:g} s, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.selfcheck.parity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get(DATA_ENV), help=f"data set (default ${DATA_ENV})")
    ap.add_argument("--preset", choices=tuple(PRESETS), default="cpu")
    ap.add_argument("--pairs", type=_at_least(1, integer=True), default=5, help="rounds of all three sides per data path (>= 1)")
    ap.add_argument("--data-paths", default="device,uint8", help="comma-separated data paths")
    ap.add_argument("--epochs", type=_at_least(1, integer=True))
    ap.add_argument("--train-samples", type=int)
    ap.add_argument("--test-samples", type=int)
    ap.add_argument("--cache-dir")
    ap.add_argument("--accuracy-tolerance", type=_at_least(0), default=0.03, help="fraction (default 0.03 = 3 points)")
    ap.add_argument("--slice-s", type=_slice, default=1.0,
                    help="run a round's sides together, in turns of this many seconds (default 1; the median step is "
                         "then the measure; a turn must hold 50 median steps); 0 = one after the other, both measures "
                         "(see bench/selfcheck/timeslice.py)")
    ap.add_argument("--before-tree", help="also run the product from this source tree (before a change), interleaved")
    ap.add_argument("--out", type=Path, help="folder for the runs and parity.json (default: a temporary folder)")
    ap.add_argument("--side", choices=("hand", "lightning"), help=argparse.SUPPRESS)  # internal: one child
    ap.add_argument("--overrides", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return ap


def _checked_paths(args: argparse.Namespace, overrides: dict[str, Any]) -> list[str]:
    """The data paths to compare, each checked, and the data set decoded into the cache once (before any
    side is timed).

    Raises:
        ConfigError: no data set, no data path, or a value no run would accept.
        bench.data.sources.DataError: the data set is missing, unreadable or corrupt, or holds fewer images than
            --train-samples or --test-samples ask for.
    """
    from bench.data import staging
    from bench.data.datamodule import CifarDataModule

    if not args.data:
        raise ConfigError(f"no data set: pass --data PATH (or set ${DATA_ENV}), or --data synthetic")
    paths = [p.strip() for p in args.data_paths.split(",") if p.strip()]
    if not paths:
        raise ConfigError("--data-paths names no data path: e.g. --data-paths device,uint8")
    if len(set(paths)) < len(paths):
        raise ConfigError(f"--data-paths names a data path twice ({args.data_paths}): name each once")
    if unknown := [p for p in paths if p not in DATA_PATHS]:
        raise ConfigError(f"--data-paths: {', '.join(map(repr, unknown))} is not one of {', '.join(DATA_PATHS)}")
    if args.before_tree and not (Path(args.before_tree) / "bench" / "__init__.py").is_file():
        raise ConfigError(f"--before-tree {args.before_tree} holds no bench/ package: name the root of another checkout")
    configs = [make_config(**{**overrides, "data_path": p}) for p in paths]
    staging.ensure_data(configs[0])
    CifarDataModule(configs[0], num_workers=0).setup("fit")  # the subsets exist (--train-samples, --test-samples)
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot use --out {args.out} as the folder of the runs: {err.strerror}") from None
    return paths


def _report(summary: dict[str, Any], slice_s: float, out: Path) -> int:
    print(format_report(summary))
    print("(met: the median ratio >= the target, though its 95% CI may reach below; '-': fewer than 3 pairs, or a "
          "problem named above; median images/s: the ratio's two sides)")
    if slice_s > 0:
        print(f"(sides run in turns of {slice_s:g} s: images/s over epochs would count the others' turns, so the "
              "measure is images/s at the median step, i.e. batch / median step time; --slice-s 0 gives both)")
    print(f"parity: {out / 'parity.json'}")
    return ExitCode.SANITY if any(s["same_work_problems"] or s["turn_problems"] for s in summary.values()) else ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.side:
        return _child(args.side, json.loads(args.overrides), args.result)
    from bench.data.sources import DataError
    from bench.results.resultfile import write_json_atomic

    overrides = {"preset": args.preset, "data": args.data, "epochs": args.epochs, "train_samples": args.train_samples,
                 "test_samples": args.test_samples, "cache_dir": args.cache_dir, "case": "baseline"}
    try:
        paths = _checked_paths(args, overrides)  # bad input fails here, before anything runs
    except (ConfigError, DataError) as err:
        print(f"python -m bench.selfcheck.parity: error: {err}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    out = args.out or Path(tempfile.mkdtemp(prefix="parity-"))
    signal.signal(signal.SIGTERM, _interrupt)  # as Ctrl-C: the sides' processes are ended on the way out
    try:
        runs = run_rounds(overrides, paths, args.pairs, out, args.before_tree, args.slice_s)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(err, file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        print(f"parity: interrupted; no summary (its output folder: {out})", file=sys.stderr)
        return ExitCode.INTERRUPTED
    summary = {p: summarize(r, args.accuracy_tolerance, args.slice_s) for p, r in runs.items()}
    write_json_atomic({"overrides": overrides, "pairs": args.pairs, "slice_s": args.slice_s, "before_tree": args.before_tree,
                       "summary": summary, "runs": runs}, out / "parity.json")
    return _report(summary, args.slice_s, out)

if __name__ == "__main__":
    sys.exit(main())
