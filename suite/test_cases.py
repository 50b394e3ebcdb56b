"""The benchmark cases as pytest-benchmark tests: baseline, dp, ddp.

Run:  pytest suite --bench-preset cpu --bench-data ../shared/data/cifar10-jpeg.tar.gz \
          --benchmark-json runs/suite.json
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.core.exitcodes import ExitCode
from bench.measure import environment
from bench.results.baselines import summary_stats
from bench.results.resultfile import load_result
from suite.conftest import CASE_STATUSES, ORDER, RESULTS, STOPPED_BY, WALL_TIME_GROUP, WRITER_LOCK, global_rank
from suite.relay import CaseFailed, CaseSkipped, relay_run, show, stop_on


def _devices_and_nodes(config: pytest.Config) -> tuple[int, int]:
    """ddp's devices per node and nodes: the options, else Slurm's tasks per node and nodes, else the
    visible GPUs on GPU (as dp uses; at least 1, so a GPU run without one fails with torch's reason)
    and 2 processes on CPU. Where the devices came from is in ``_devices_source``."""
    return _devices_and_nodes_sourced(config)[:2]


def _devices_and_nodes_sourced(config: pytest.Config) -> tuple[int, int, str]:
    devices = config.getoption("--bench-devices")
    nodes = config.getoption("--bench-nodes")
    source = "--bench-devices"
    if "SLURM_STEP_ID" in os.environ:
        source = source if devices else "SLURM_NTASKS_PER_NODE"
        devices = devices or int(os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0])
        nodes = nodes or int(os.environ.get("SLURM_NNODES", "1"))
    if not devices and _accelerator(config) == "gpu":
        devices, source = max(1, torch.cuda.device_count() if torch.cuda.is_available() else 0), "visible GPUs"
    elif not devices:
        devices, source = 2, "2 CPU processes (default)"
    return devices, nodes or 1, source


def _accelerator(config: pytest.Config) -> str:
    """The accelerator the runs use: a --bench-arg --accelerator, else the preset's."""
    from bench.core.config import PRESETS

    args = config.getoption("--bench-arg")
    for i, arg in enumerate(args):
        if arg.startswith("--accelerator="):
            return arg.split("=", 1)[1]
        if arg == "--accelerator" and i + 1 < len(args):
            return args[i + 1]
    return PRESETS.get(config.getoption("--bench-preset"), {}).get("accelerator", "cpu")


def _command(config: pytest.Config, case: str, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "bench", "run", "--case", case, "--preset", config.getoption("--bench-preset"),
           "--out", str(out)]
    if config.getoption("--bench-data"):
        cmd += ["--data", config.getoption("--bench-data")]
    if case == "ddp":
        devices, nodes = _devices_and_nodes(config)
        cmd += ["--devices", str(devices), "--num-nodes", str(nodes)]
    return cmd + config.getoption("--bench-arg")


def _run_id(case: str, round_index: int) -> str:
    if "SLURM_STEP_ID" in os.environ:  # identical in every task of the step
        return f"{case}-job{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}-r{round_index}"
    return f"{case}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-r{round_index}"


def run_case(request: pytest.FixtureRequest, benchmark, case: str, bench_round: int = 1) -> dict | None:
    """Benchmark round ``bench_round`` of ``case`` (one run; the suite interleaves the rounds of all
    cases, suite/conftest.py); return its result (None on ranks > 0).

    Every round's result, failed ones included, goes to the suite's end table (``RESULTS``).
    Skips (pytest.skip) when the run reports the case as skipped on this hardware.
    """
    config = request.config
    out = Path(config.getoption("--bench-out"))
    results: list[dict] = []
    rounds = config.getoption("--bench-rounds")
    if case == "dp":
        _skip_dp_without_gpus(config, out, bench_round)  # before the benchmark: a skipped one has no timings
    config.stash[ORDER].append(f"{case} round {bench_round}")
    if rounds > 1 and global_rank() == 0:
        show(config, f"[round {bench_round}/{rounds}] {case} (run {len(config.stash[ORDER])} of the suite)")

    def once() -> None:
        run_id = _run_id(case, bench_round - 1)
        # the session's writer lock handed over explicitly: os.environ may have been changed since the
        # session took it (tests that ran in the same pytest process)
        lock = config.stash.get(WRITER_LOCK, None)
        env = {**os.environ, **(lock.export() if lock is not None else {}), "BENCH_RUN_ID": run_id}
        try:
            relay_run(config, case, _command(config, case, out), env)
        except (CaseFailed, KeyboardInterrupt) as stopped:
            code = getattr(stopped, "returncode", ExitCode.INTERRUPTED)
            # a run ended by SIGINT/SIGTERM before it could answer (e.g. during start-up) was interrupted
            config.stash[CASE_STATUSES].append(ExitCode.INTERRUPTED if code in _STOPPED_BY else code)
            # the end table shows it as not a figure; a run that wrote nothing (killed, or stopped before
            # training) gets the suite's own record of what happened; refused input ran nothing
            if _keep_for_table(config, out / f"{run_id}.json") is None and code != ExitCode.BAD_INPUT:
                _record_lost_run(config, case, run_id, out, code)
            raise
        if global_rank() == 0:
            result = _keep_for_table(config, out / f"{run_id}.json", must_exist=True)
            results.append(result)
            if result["status"] == "skipped":
                raise CaseSkipped(result["reason"])
            if result["metrics"].get("fit_s") is None:  # --epochs 0: tested, never trained; its row says so
                raise CaseSkipped(f"{run_id} timed no training (optimizer steps: "
                                  f"{result['metrics'].get('optimizer_steps')}): not a figure")
        else:
            results.append({})

    # pytest-benchmark's table times the whole call; its group name says so beside the figures
    benchmark.group = WALL_TIME_GROUP
    stopped = None
    try:
        benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    except (CaseSkipped, CaseFailed) as outcome:
        stopped = outcome
    except KeyboardInterrupt:
        stopped = KeyboardInterrupt()
    if isinstance(stopped, KeyboardInterrupt):  # pytest's own would print "!!! KeyboardInterrupt !!!" and a
        # traceback into this file: the run's own line said what happened, the suite's table says the rest
        how = "SIGTERM" if STOPPED_BY else "Ctrl-C"
        pytest.exit(f"suite interrupted ({how}): what the run recorded is in its line and the table above",
                    returncode=int(pytest.ExitCode.INTERRUPTED))
    if stopped is not None:  # outside the except block: pytest's outcome without a chained traceback
        stop_on(config, stopped)
    if global_rank() != 0:
        return None
    fit = [r["metrics"]["fit_s"] for r in results]
    last = {**results[-1], "metrics": {**results[-1]["metrics"], "fit_s_samples": fit}}
    benchmark.extra_info.update({
        "figure": "stats time the whole `python -m bench run` call; compare extra_info.fit_s (training loop)",
        "case": case, "round": bench_round, "rounds": rounds, "order": len(config.stash[ORDER]),
        "fit_s": statistics.median(fit), "fit_s_samples": fit, "fit_s_stats": summary_stats(fit),
        # each round's own figures, so that a table of suite.json gives the medians of the per-run files
        **{f"{k}_samples": [r["metrics"].get(k) for r in results] for k in ("throughput_img_s", "test_accuracy")},
        **{k: last["metrics"].get(k) for k in ("throughput_img_s", "epoch_train_s", "optimizer_steps",
                                                "train_loss", "test_accuracy", "test_correct", "test_total")},
        "world_size": last["world"]["world_size"], "result_paths": [r["path"] for r in results],
        **({"ddp_devices_from": _devices_and_nodes_sourced(config)[2]} if case == "ddp" else {}),
        "result": last,
    })
    return last


def _keep_for_table(config: pytest.Config, path: Path, must_exist: bool = False) -> dict | None:
    """Read one round's result JSON (rank 0) and keep it for the suite's end table, whatever its status.

    Returns None on ranks > 0 and, unless ``must_exist``, when a failed run left no readable result.

    Raises:
        ValueError: ``must_exist`` and the file is missing or damaged (bench.results.resultfile.load_result).
    """
    if global_rank() != 0:
        return None
    try:
        result = load_result(path)
    except (OSError, ValueError):
        if must_exist:
            raise
        return None
    result["path"] = str(path)
    config.stash[RESULTS].append(result)
    return result


_STOPPED_BY = {-signal.SIGINT: "SIGINT", 128 + signal.SIGINT: "SIGINT", -signal.SIGTERM: "SIGTERM",
               128 + signal.SIGTERM: "SIGTERM"}  # a run's exit status -> the signal that stopped it


def lost_run_reason(returncode: int) -> tuple[str, str]:
    """(status, reason) of a run that exited ``returncode`` without writing its result (pure).

    ``interrupted`` for SIGINT or SIGTERM before training (the run's 130/143, -2/-15 when the signal's default
    action ended it, or the suite's own Ctrl-C), else ``failed``, naming the signal that killed it (e.g. -9:
    SIGKILL, the kernel's OOM killer's).
    """
    stops = {**_STOPPED_BY, ExitCode.INTERRUPTED: "Ctrl-C"}  # (-N: the signal's default action ended it)
    if returncode in stops:
        return "interrupted", (f"{stops[returncode]} during start-up, before the run wrote a result; "
                               "recorded by the suite")
    if returncode < 0:
        killer = signal.Signals(-returncode).name
        why = " (out of memory, or killed from outside)" if killer == "SIGKILL" else ""
        return "failed", f"the run was killed by {killer}{why} before it wrote a result; recorded by the suite"
    return "failed", f"the run exited {returncode} without writing a result; recorded by the suite"


def _record_lost_run(config: pytest.Config, case: str, run_id: str, out: Path, returncode: int) -> None:
    """Write (rank 0) the record of a run that left none, as ``slurm/suite.sh``'s mark-interrupted does,
    and keep it for the end table. Its config is the one asked for (the run recorded nothing of its own)."""
    from bench.core.config import ConfigError
    from bench.run.runner import record_lost_case

    if global_rank() != 0:
        return
    devices, nodes = _devices_and_nodes(config) if case == "ddp" else (None, None)
    data = config.getoption("--bench-data") or os.environ.get("BENCH_DATA") or "unknown"
    try:
        written = record_lost_case(config.getoption("--bench-preset"), case, data, str(out), *lost_run_reason(returncode),
                                   run_id=run_id, devices=devices, num_nodes=nodes)
    except ConfigError:
        return
    _keep_for_table(config, Path(written["path"]))


def _skip_dp_without_gpus(config: pytest.Config, out: Path, bench_round: int = 1) -> None:
    """Skip the dp case, recording a skipped result JSON with the reason, on < 2 GPUs."""
    from bench.core.config import ConfigError, make_config
    from bench.run.dataparallel import dp_skip_reason
    from bench.run.runner import skipped

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        dp = make_config(config.getoption("--bench-preset"), case="dp", accelerator="gpu", devices=max(found, 2),
                         data=config.getoption("--bench-data") or "synthetic", out_dir=str(out))
    except ConfigError:
        return  # bad input: the run itself refuses it, with its own message and exit status
    try:
        reason = dp_skip_reason(dp)
    except environment.GPUUnavailableError as err:  # a GPU present but unusable: a failure, not a skip
        pytest.fail(str(err), pytrace=False)
    if reason is None:
        return
    if global_rank() == 0 and bench_round == 1:  # one skipped record, not one a round
        config.stash[RESULTS].append(skipped(dp, reason, run_id=_run_id("dp", 0)))
    pytest.skip(reason)


def _check(result: dict | None, case: str) -> None:
    if result is None:  # a rank > 0 under srun: its child exited 0, rank 0 checks the result
        return
    assert result["status"] == "ok", result.get("reason")
    assert result["case"] == case
    assert result["metrics"]["fit_s"] > 0
    assert result["sanity"]["passed"], result["sanity"]  # correctness, apart from the timing figures


def test_baseline(request, benchmark, bench_round):
    _check(run_case(request, benchmark, "baseline", bench_round), "baseline")


def test_dp(request, benchmark, bench_round):
    _check(run_case(request, benchmark, "dp", bench_round), "dp")


def test_ddp(request, benchmark, bench_round):
    result = run_case(request, benchmark, "ddp", bench_round)
    _check(result, "ddp")
    if result is not None:
        assert result["world"]["world_size"] == _world_size(request.config)
        assert result["world"]["params_identical"]


def _world_size(config: pytest.Config) -> int:
    devices, nodes = _devices_and_nodes(config)
    return devices * nodes
