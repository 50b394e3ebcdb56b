"""The records of a job's last seconds: ``interrupted``/``failed`` results for the cases a Slurm job did not finish.

    python -m bench.results.endrecords --out DIR --job JOBID --preset P --data D \
        [--status interrupted|failed] [--nodes N --tasks-per-node T --gpus-per-node G] [--wait-s S] \
        --step CASE:ROUND:REASON [--step ...] [--running CASE:ROUND:STEP_ID]

Used by ``slurm/suite.sh`` after SIGTERM (``scancel``, the time limit): Slurm gives the batch script
``KillWait`` seconds (5 on the local cluster, 30 by default) before SIGKILL, and no new job step.
So this module imports only the standard library and the torch-free parts of this package
(bench.core.config, bench.core.files, bench.results.records): it starts in well under a second,
under the host's plain ``python3`` too, where ``cifar-bench mark-interrupted`` would import torch.

One record per step given, at ``DIR/<case>-job<JOBID>.suite-r<ROUND-1>.json`` (the suite's run id
pattern, ``suite/test_cases.py``), unless that step already has one of its own
(``<case>-job<JOBID>.*-r<ROUND-1>.json``: the run, or the suite, wrote it). The step named by
``--running`` is given ``--wait-s`` seconds (default 2) for its ranks to write theirs first; its record
then takes the run id the ranks would have used (``<case>-job<JOBID>.<STEP_ID>-r<ROUND-1>``), so a rank
that writes later replaces it rather than adding a second record of the same run.
The environment recorded is what can be read without torch (``environment.recorded_by`` says so):
such a record is never a figure (its status), only the account of what did not finish.
Exit status: 0 written (or kept); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

from bench.core.config import ConfigError, make_config
from bench.core.files import atomic_open
from bench.results.schema import RESULT_SCHEMA, RESULT_SCHEMA_VERSION

CASES = ("baseline", "dp", "ddp")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE",
              "SLURM_CPUS_PER_TASK", "SLURM_JOB_PARTITION")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def step_records(out: Path, job: str, case: str, round_: int) -> list[Path]:
    """The records a step (``case``, 1-based ``round_``) of job ``job`` left in ``out``: the run's, the suite's or ours."""
    return sorted(out.glob(f"{case}-job{job}.*-r{round_ - 1}.json"))


def light_environment() -> dict:
    """The facts of this host readable without torch (no library versions, no GPUs)."""
    return {"hostname": socket.gethostname(), "python": sys.version.split()[0], "python_prefix": sys.prefix,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ} or None,
            "container_image": os.environ.get("BENCH_IMAGE"), "container_image_id": os.environ.get("BENCH_IMAGE_ID") or None,
            "git_commit": os.environ.get("BENCH_SOURCE_COMMIT") or None,
            "recorded_by": "bench.results.endrecords on the batch host (torch-free: no library versions)"}


def asked_config(args: argparse.Namespace, case: str) -> dict:
    """The configuration the suite asked the case for (as slurm/suite.sh launches it); ``data_kind``
    is "unknown": the data was not opened here.

    Raises:
        ConfigError: the preset or data is invalid.
    """
    devices, nodes = {"baseline": (1, 1), "dp": (max(args.gpus_per_node, 2), 1),
                      "ddp": (args.tasks_per_node, args.nodes)}[case]
    config = make_config(args.preset, case=case, data=args.data, out_dir=str(args.out),
                         accelerator="gpu" if case == "dp" else None, devices=devices, num_nodes=nodes)
    return {**config.to_dict(), "data_kind": "unknown"}


def end_record(args: argparse.Namespace, case: str, round_: int, reason: str, step_id: str = "suite") -> dict:
    """One result record (schema of bench.results.resultfile) of a step that did not finish."""
    now = utc_now()
    return {"schema": RESULT_SCHEMA, "schema_version": RESULT_SCHEMA_VERSION,
            "run_id": f"{case}-job{args.job}.{step_id}-r{round_ - 1}", "case": case, "status": args.status,
            "reason": reason, "profiled": False, "test_knobs": {}, "config": asked_config(args, case), "metrics": {},
            "sanity": {}, "world": {}, "environment": light_environment(), "profile": None,
            "started_utc": now, "ended_utc": now}


def write_end(args: argparse.Namespace, case: str, round_: int, reason: str) -> Path:
    """Write the step's record unless it has one; return the record that stands."""
    if found := step_records(args.out, args.job, case, round_):
        return found[0]
    running = args.running and args.running[:2] == (case, round_) and args.running[2].isdigit()
    record = end_record(args, case, round_, reason, args.running[2] if running else "suite")
    path = args.out / f"{record['run_id']}.json"
    try:
        with atomic_open(path, "w", exclusive=True) as f:  # a rank's record written meanwhile wins
            json.dump(record, f, indent=2)
            f.write("\n")
    except FileExistsError:
        pass
    return path


def _step(text: str) -> tuple[str, int, str]:
    case, _, rest = text.partition(":")
    round_, _, reason = rest.partition(":")
    if case not in CASES or not round_.isdigit() or int(round_) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CASE:ROUND[:REASON], CASE one of {', '.join(CASES)}")
    return case, int(round_), reason


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.results.endrecords", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the job's results folder")
    p.add_argument("--job", required=True, help="the Slurm job id")
    p.add_argument("--preset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--status", choices=("interrupted", "failed"), default="interrupted")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--tasks-per-node", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--step", type=_step, action="append", required=True, help="CASE:ROUND:REASON, repeatable")
    p.add_argument("--running", type=_step, help="CASE:ROUND:STEP_ID of the step that was running (its ranks may write first)")
    p.add_argument("--wait-s", type=float, default=2.0, help="seconds the running step's ranks get (default 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.running:
        deadline = time.monotonic() + args.wait_s
        while not step_records(args.out, args.job, *args.running[:2]) and time.monotonic() < deadline:
            time.sleep(0.1)
    try:
        for case, round_, reason in args.step:
            print(f"result: {write_end(args, case, round_, reason or 'did not finish')}", flush=True)
    except ConfigError as err:
        print(f"endrecords: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
