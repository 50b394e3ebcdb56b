"""The ``cifar-bench`` command line (also ``python -m bench``), built on argparse.

    cifar-bench run --case ddp --data ../shared/data/cifar10-jpeg.tar.gz --preset cpu --devices 2
    cifar-bench data download DIR
    cifar-bench data prepare --data PATH
    cifar-bench table RESULT.json...
    cifar-bench compare RESULT.json... --baseline a100-2node [--tolerance 10]
    cifar-bench baseline record RESULT.json... --name NAME
    cifar-bench report RESULTS... [--baseline NAME] --out DIR

Exit status: the one table of bench/exitcodes.py (docs/exit-codes.md). Each analysis command owns its
parser and handler in its module (``table``: bench.results, ``compare``: bench.compare, ``baseline``:
bench.recording, ``report``: bench.report); none of them imports torch or Lightning, so they start fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import CASES, DATA_ENV, DATA_PATHS, MODELS, PRECISIONS, PRESETS, ConfigError, make_config

from bench.exitcodes import ExitCode

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SANITY = ExitCode.FAILED, ExitCode.BAD_INPUT, ExitCode.SANITY


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run one benchmark case and write its result JSON")
    p.add_argument("--case", choices=CASES, default="baseline")
    p.add_argument("--data", help=f"data set folder/.tar.gz, or 'synthetic' (default: ${DATA_ENV})")
    p.add_argument("--preset", choices=tuple(PRESETS), default="smoke")
    p.add_argument("--model", choices=MODELS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--global-batch-size", type=int, help="images per optimizer step over all devices")
    p.add_argument("--devices", type=int, help="devices per node (dp: GPUs; default all visible)")
    p.add_argument("--num-nodes", type=int)
    p.add_argument("--accelerator", choices=("cpu", "gpu"))
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--train-samples", type=int, help="class-balanced training subset; 0 = all")
    p.add_argument("--test-samples", type=int, help="class-balanced test subset; 0 = all")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-workers", type=int, help="DataLoader workers per rank; -1 = auto")
    p.add_argument("--pin-memory", action=argparse.BooleanOptionalAction, help="page-locked batches (GPU)")
    p.add_argument("--persistent-workers", action=argparse.BooleanOptionalAction,
                   help="keep loader workers between epochs (needs workers)")
    p.add_argument("--data-path", choices=DATA_PATHS,
                   help="pil: PIL transforms per image; uint8 (default): uint8 tensor transforms per image; "
                        "device: the training set on the device, augmented per batch there")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction,
                   help="TensorFloat-32 matmuls and convolutions on Ampere+ GPUs (default on)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="network and input batches in channels_last memory format")
    p.add_argument("--val-every-n-epochs", type=int)
    p.add_argument("--data-checksums", help="official (default), skip, or a JSON file {name: md5}")
    p.add_argument("--cache-dir", help="decoded-data cache folder (default $BENCH_CACHE or ~/.cache/cifar-bench)")
    p.add_argument("--init-weights", help="start from this network state_dict (from --save-weights)")
    p.add_argument("--save-weights", action="store_true", default=None,
                   help="write the trained network beside the result JSON (<run_id>.weights.pt)")
    p.add_argument("--out", dest="out_dir", help="folder for the result JSON (default: runs)")
    p.add_argument("--step-breakdown", action=argparse.BooleanOptionalAction,
                   help="time each step's data wait, compute and all-reduce (default on; on GPU it "
                        "synchronises the device a few times per step: --no-step-breakdown for the purest times)")
    p.add_argument("--profile", action="store_true", default=None,
                   help="torch.profiler over a window of training steps: traces per global rank in "
                        "OUT/profiles/RUN_ID/rank<R>/; the result is marked profiled (not a benchmark figure)")
    p.add_argument("--profile-wait", type=int, help="steps skipped before the profiler's warm-up (default 5)")
    p.add_argument("--profile-warmup", type=int, help="steps traced and discarded (default 2)")
    p.add_argument("--profile-active", type=int, help="steps recorded in the trace (default 3)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, help="cuDNN autotuner (default: on for GPU)")
    p.add_argument("--sync-batchnorm", action=argparse.BooleanOptionalAction, help="ddp: BatchNorm over all ranks")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the case N times, each in a fresh process with its own JSON (fit_s samples)")


def _add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="stage the data set (download or decode into the cache)")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    d = dsub.add_parser("download", help="download the official CIFAR-10 (MD5-checked) into DIR")
    d.add_argument("dir", type=Path)
    r = dsub.add_parser("prepare", help="decode a data set into the cache, so jobs only read it")
    r.add_argument("--data", help=f"data set path (default: ${DATA_ENV})")
    r.add_argument("--data-checksums")
    r.add_argument("--cache-dir")


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``cifar-bench``."""
    from bench import compare, recording, report, results

    ap = argparse.ArgumentParser(prog="cifar-bench", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    _add_data_parser(sub)
    results.add_parser(sub)
    compare.add_parser(sub)
    recording.add_parser(sub)
    report.add_parser(sub)
    _add_mark_interrupted_parser(sub)
    return ap


def _add_mark_interrupted_parser(sub) -> None:
    m = sub.add_parser("mark-interrupted", help="record a case as interrupted (used by slurm/suite.sh)")
    m.add_argument("--case", choices=CASES, required=True)
    m.add_argument("--preset", choices=tuple(PRESETS), default="smoke")
    m.add_argument("--data", default="unknown")
    m.add_argument("--out", dest="out_dir", required=True)
    m.add_argument("--reason", required=True)
    m.set_defaults(func=cmd_mark_interrupted)


def _run_config(args: argparse.Namespace):
    fields = ("case", "data", "model", "epochs", "global_batch_size", "devices", "num_nodes", "accelerator",
              "precision", "train_samples", "test_samples", "lr", "seed", "num_workers", "pin_memory",
              "persistent_workers", "data_path", "tf32", "channels_last", "val_every_n_epochs",
              "data_checksums", "cache_dir", "init_weights", "save_weights", "out_dir",
              "step_breakdown", "profile", "profile_wait", "profile_warmup", "profile_active",
              "cudnn_benchmark", "sync_batchnorm")
    overrides = {f: getattr(args, f) for f in fields}
    if args.case == "dp":
        overrides["accelerator"] = overrides["accelerator"] or "gpu"
        overrides["devices"] = overrides["devices"] or _visible_gpus() or 2
    return make_config(args.preset, **overrides)


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cmd_repeats(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``args.repeats`` fresh ``python -m bench run`` processes; print their fit_s statistics."""
    import os
    import subprocess

    from bench.baselines import summary_stats
    from bench.results import format_table, inherited_run_id, load_result, new_run_id, result_path

    config = _run_config(args)  # validate once, before anything starts
    group = inherited_run_id() or new_run_id(config.case)
    single = [a for i, a in enumerate(argv) if a != "--repeats" and (i == 0 or argv[i - 1] != "--repeats")
              and not a.startswith("--repeats=")]
    results, status = [], 0
    for i in range(args.repeats):
        env = {**os.environ, "BENCH_RUN_ID": f"{group}-r{i}"}
        status = subprocess.run([sys.executable, "-m", "bench", *single], env=env).returncode or status
        path = result_path(config.out_dir, env["BENCH_RUN_ID"])
        if path.exists():
            results.append(load_result(path))
    fit = [r["metrics"]["fit_s"] for r in results if r["status"] == "ok"]
    if len(fit) >= 1:
        last = {**results[-1], "metrics": {**results[-1]["metrics"], "fit_s": summary_stats(fit)["median"],
                                            "fit_s_samples": fit}}
        print(f"\n{args.repeats} repeats of {config.case}: fit_s {summary_stats(fit)}")
        print(format_table([last]))
    return status


def cmd_run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    from bench.results import format_table
    from bench.runner import run_case

    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    if args.repeats > 1:
        return cmd_repeats(args, argv if argv is not None else sys.argv[1:])
    config = _run_config(args)
    result = run_case(config)
    if result is None:  # not global rank 0: rank 0 reports
        return 0
    print(format_table([result]))
    from bench.breakdown import format_breakdown, rank_breakdowns

    if text := format_breakdown(rank_breakdowns(result)):
        print(text)
    if result.get("profile"):
        print(f"profile: {result['profile']['folder']} (traces and top_ops per global rank)")
    print(f"result: {result['path']}")
    if result["status"] == "skipped":
        print(f"skipped: {result['reason']}")
        return 0
    if not result["sanity"].get("passed", False):
        print(f"sanity check failed: {result['sanity']}", file=sys.stderr)
        return EXIT_SANITY
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from bench import sources
    from bench.data import prepare_cache

    if args.data_cmd == "download":
        print(f"downloaded: {sources.download(args.dir)}")
        return 0
    config = make_config("smoke", data=args.data, data_checksums=args.data_checksums, cache_dir=args.cache_dir)
    print(f"cache: {prepare_cache(config)}")
    return 0


# Lightning warnings that do not apply to this design (see the comments at each).
_QUIET = (
    # the module normalises batches in on_after_batch_transfer on purpose (after the device copy)
    r".*overridden `on_after_batch_transfer` in `LightningModule`.*",
    # test metrics are synchronised by torchmetrics' compute(), once, not by self.log
    r".*sync_dist=True.* when logging on epoch level.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


def cmd_mark_interrupted(args: argparse.Namespace) -> int:
    from bench.runner import record_status

    config = make_config(args.preset, case=args.case, data=args.data, out_dir=args.out_dir,
                         accelerator="gpu" if args.case == "dp" else None, devices=2 if args.case == "dp" else None)
    print(f"result: {record_status(config, 'interrupted', args.reason)['path']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    import warnings

    for pattern in _QUIET:
        warnings.filterwarnings("ignore", message=pattern)
    args = parser().parse_args(argv)
    if args.command not in ("run", "data"):  # the analysis commands: bad files are ValueErrors
        try:
            return args.func(args)
        except ValueError as err:  # how the result and baseline readers report a bad file
            print(f"cifar-bench: error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    from bench.environment import GPUUnavailableError
    from bench.sources import DataError

    try:
        if args.command == "run":
            return cmd_run(args, argv)
        return cmd_data(args)
    except (ConfigError, DataError, GPUUnavailableError) as err:
        print(f"cifar-bench: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main_exit() -> None:
    """Console-script entry point: exit with :func:`main`'s status."""
    sys.exit(main())
