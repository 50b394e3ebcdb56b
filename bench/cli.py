"""The ``cifar-bench`` command line (also ``python -m bench``), built on argparse.

    cifar-bench run --case ddp --data ../shared/data/cifar10-jpeg.tar.gz --preset cpu --devices 2
    cifar-bench data download DIR
    cifar-bench data prepare --data PATH
    cifar-bench table RESULT.json...

Exit status: 0 success (also a case skipped on this hardware), 1 training failed,
2 bad input (configuration, data set, accelerator), 3 a sanity check failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import CASES, DATA_ENV, MODELS, PRECISIONS, PRESETS, ConfigError, make_config

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SANITY = 1, 2, 3


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
    p.add_argument("--num-workers", type=int)
    p.add_argument("--val-every-n-epochs", type=int)
    p.add_argument("--data-checksums", help="official (default), skip, or a JSON file {name: md5}")
    p.add_argument("--cache-dir", help="decoded-data cache folder (default $BENCH_CACHE or ~/.cache/cifar-bench)")
    p.add_argument("--out", dest="out_dir", help="folder for the result JSON (default: runs)")


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
    ap = argparse.ArgumentParser(prog="cifar-bench", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    _add_data_parser(sub)
    t = sub.add_parser("table", help="print the table of result JSON files")
    t.add_argument("results", nargs="+", type=Path)
    return ap


def _run_config(args: argparse.Namespace):
    fields = ("case", "data", "model", "epochs", "global_batch_size", "devices", "num_nodes", "accelerator",
              "precision", "train_samples", "test_samples", "lr", "seed", "num_workers", "val_every_n_epochs",
              "data_checksums", "cache_dir", "out_dir")
    overrides = {f: getattr(args, f) for f in fields}
    if args.case == "dp":
        overrides["accelerator"] = overrides["accelerator"] or "gpu"
        overrides["devices"] = overrides["devices"] or _visible_gpus() or 2
    return make_config(args.preset, **overrides)


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.results import format_table
    from bench.runner import run_case

    config = _run_config(args)
    result = run_case(config)
    if result is None:  # not global rank 0: rank 0 reports
        return 0
    print(format_table([result]))
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


def cmd_table(args: argparse.Namespace) -> int:
    from bench.results import format_table, load_result

    print(format_table([load_result(p) for p in args.results]))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    args = parser().parse_args(argv)
    from bench.environment import GPUUnavailableError
    from bench.sources import DataError

    try:
        return {"run": cmd_run, "data": cmd_data, "table": cmd_table}[args.command](args)
    except (ConfigError, DataError, GPUUnavailableError) as err:
        print(f"cifar-bench: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main_exit() -> None:
    """Console-script entry point: exit with :func:`main`'s status."""
    sys.exit(main())
