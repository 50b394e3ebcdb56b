"""The ``comm`` command: the interconnect check of a ddp run, alone, without training.

    cifar-bench comm [--devices 2] [--accelerator cpu|gpu] [--model simple_cnn] [--baseline NAME] [--out FILE]
    srun -N2 --ntasks-per-node=1 cifar-bench comm --baseline NAME      # on a fresh allocation

What a user runs on a fresh allocation: the same all-reduce measurement (:mod:`bench.run.allreduce`) in a
process group of its own, the table printed by global rank 0, and, with ``--baseline``, the
interconnect's verdict against the baseline file's ddp entry (:mod:`bench.results.interconnect`).
Under ``srun`` every task is a rank (Lightning's SLURMEnvironment gives rank, world size and the main
node's address); otherwise ``--devices`` processes are started on this machine.

Exit status: 0, 1 (bench.core.exitcodes REGRESSION) when the verdict is "interconnect degraded", 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
from pathlib import Path

from bench.core.config import ACCELERATORS, MODELS, ConfigError
from bench.core.exitcodes import REGRESSION, ExitCode
from bench.core.options import tolerance_percent

SCHEMA = "cifar-bench/interconnect"


def add_parser(sub) -> None:
    """Add ``comm`` to ``sub`` (argparse subparsers)."""
    p = sub.add_parser("comm", help="measure the interconnect alone (all-reduce bus bandwidth), no training",
                       description="Measure all-reduce bandwidth and latency as every ddp run does before its timed "
                                   "fit (nccl-tests' algbw and busbw per message size, per node pair across nodes), "
                                   "without training. Under srun every task is a rank; otherwise --devices "
                                   "processes start here. Exit 1 when --baseline judges the interconnect degraded.")
    p.add_argument("--accelerator", choices=ACCELERATORS, default="cpu", help="cpu (gloo) or gpu (nccl) (default: cpu)")
    p.add_argument("--devices", type=int, default=None, metavar="N",
                   help="processes to start on this machine when not under srun (default: 2 on cpu, the visible "
                        "GPUs on gpu); under srun the tasks are the ranks")
    p.add_argument("--model", choices=MODELS, default="simple_cnn",
                   help="network whose gradient bucket the sizes reach beyond (default: simple_cnn)")
    p.add_argument("--baseline", help="judge against this baseline (name or path): its ddp case's interconnect figures")
    p.add_argument("--tolerance", type=tolerance_percent, default=10.0, help="allowed bus bandwidth loss in percent (default 10)")
    p.add_argument("--out", type=Path, help="also write the record as JSON to this file")
    p.add_argument("--pg-timeout-s", type=float, default=120.0, help="longest wait for a missing rank [s] (default 120)")
    p.set_defaults(func=cmd_comm)


def cmd_comm(args: argparse.Namespace) -> int:
    """Run the check (start the ranks here, or be one under srun); print and judge on global rank 0."""
    if args.tolerance < 0:
        raise ConfigError(f"--tolerance is a loss in percent and must be >= 0, got {args.tolerance}")
    if not 0 < args.pg_timeout_s <= 7 * 24 * 3600:
        raise ConfigError(f"--pg-timeout-s must be > 0 and at most a week, got {args.pg_timeout_s}")
    if args.out is not None and (args.out.is_dir() or not args.out.parent.is_dir()):
        raise ConfigError(f"--out {args.out}: " + ("is a folder: name a file, e.g. comm.json" if args.out.is_dir() else
                          f"its folder {args.out.parent} does not exist: create it first (a typo would be a new folder)"))
    baseline = _load_baseline(args.baseline) if args.baseline else None  # a bad name fails before any rank starts
    if "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = SLURMEnvironment()
        record = _measure(env.global_rank(), env.local_rank(), env.world_size(), env.main_address, env.main_port, args,
                          _plan(args))
        return _report(record, args, baseline) if record is not None else 0
    devices = _default_devices(args.accelerator) if args.devices is None else args.devices
    if devices < 1:
        raise ConfigError(f"--devices must be >= 1, got {devices}")
    if args.accelerator == "gpu":
        from bench.measure.environment import GPUUnavailableError, check_gpu_usable

        try:
            check_gpu_usable(devices)
        except GPUUnavailableError as err:  # bad input (exit 2), as for `run --accelerator gpu`
            raise ConfigError(f"comm --accelerator gpu: {err}") from err
    return _report(_spawn(devices, args, _plan(args)), args, baseline)


def _plan(args: argparse.Namespace):
    """The sizes of the check for ``--model`` on ``--accelerator`` (:func:`bench.results.bandwidth.plan_check`)."""
    from bench.results import bandwidth
    from bench.run.allreduce import gradient_bytes
    from bench.run.model import build_network  # (imports Lightning: once here, not in every spawned rank)

    return bandwidth.plan_check(gradient_bytes(build_network(args.model)), args.accelerator)


def _spawn(devices: int, args: argparse.Namespace, plan) -> dict:
    """Start ``devices`` ranks on this machine; return rank 0's record (a failed rank: RuntimeError, named)."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").Queue()
    ranks = mp.start_processes(_spawned, args=(devices, _free_port(), args, plan, queue), nprocs=devices,
                               start_method="spawn", join=False)
    record = None
    try:
        while not ranks.join(timeout=0.5):  # (read while the ranks run: a queue's feeder blocks their exit)
            record = record or _poll(queue)
    except Exception as err:  # torch names the rank and its error (ProcessRaisedException, ProcessExitedException)
        raise RuntimeError(f"comm: a rank failed: {str(err).strip().splitlines()[-1]}") from err
    return record or queue.get(timeout=10)


def _poll(queue) -> dict | None:
    import queue as queues

    try:
        return queue.get_nowait()
    except queues.Empty:
        return None


def _spawned(rank: int, world: int, port: int, args: argparse.Namespace, plan, queue) -> None:
    record = _measure(rank, rank, world, "127.0.0.1", port, args, plan)
    if record is not None:
        queue.put(record)


def _measure(rank: int, local_rank: int, world: int, address: str, port: int, args: argparse.Namespace,
             plan) -> dict | None:
    """This rank's part of the check in a process group of its own; the record on global rank 0, else None."""
    import torch
    import torch.distributed as dist

    from bench.run import allreduce

    gpu = args.accelerator == "gpu"
    device = torch.device("cuda", local_rank) if gpu else torch.device("cpu")
    if gpu:
        torch.cuda.set_device(device)
        _request_nccl_log(args, port)
    dist.init_process_group("nccl" if gpu else "gloo", init_method=f"tcp://{address}:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=args.pg_timeout_s))
    try:
        record = allreduce.interconnect_check(plan, device, dist.get_backend())
    finally:
        dist.destroy_process_group()
    return record if rank == 0 else None


def _request_nccl_log(args: argparse.Namespace, port: int) -> None:
    """Ask NCCL for its transport lines (bench.run.comm), in a folder beside ``--out`` or in the temp folder."""
    import tempfile

    from bench.core.config import make_config
    from bench.run import comm

    folder = args.out.parent if args.out else Path(tempfile.gettempdir()) / "cifar-bench-comm"
    config = make_config("smoke", case="ddp", accelerator="gpu", data="synthetic", out_dir=str(folder))
    comm.request_nccl_log(config, f"comm-{os.environ.get('SLURM_JOB_ID', 'local')}-{port}")


def _report(record: dict, args: argparse.Namespace, baseline: dict | None) -> int:
    """Print the record (and the verdict against ``baseline``), write ``--out``; return the exit status."""
    from bench.measure import environment
    from bench.results import interconnect
    from bench.results.resultfile import utc_now, write_json_atomic

    env = environment.collect()
    print(f"interconnect: {interconnect.describe(record)}")
    print(interconnect.table_text(record))
    for pair in record["pairs"]:
        if pair["table"] and not pair["same_as_world"]:
            print(f"node pair {'-'.join(pair['nodes'])} (round {pair['round']}):\n{interconnect.table_text(pair)}")
    status = int(ExitCode.OK)
    if baseline is not None:
        ddp = baseline["cases"].get("ddp") or {}
        judged = interconnect.verdict(interconnect.summarise([record]), ddp.get("interconnect"), args.tolerance,
                                      env, ddp.get("environment"))
        print(f"vs baseline {baseline.get('name')}: {judged['text']}")
        status = int(REGRESSION) if judged["verdict"] == interconnect.DEGRADED else status
    if args.out:
        write_json_atomic({"schema": SCHEMA, "schema_version": 1, "recorded_utc": utc_now(), "interconnect": record,
                           "environment": env}, args.out)
        print(f"record: {args.out}")
    return status


def _default_devices(accelerator: str) -> int:
    if accelerator == "cpu":
        return 2
    import torch

    return max(torch.cuda.device_count(), 1)


def _load_baseline(name: str) -> dict:
    from bench.results.baselines import load_baseline

    return load_baseline(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
