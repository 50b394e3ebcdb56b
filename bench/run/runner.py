"""One benchmark run from config to result JSON: checks, fit, test, gather, write (rank 0).

Order matters for clear failures: the configuration, the accelerator and the data set are
checked before any process group exists, so bad input fails every process with a message and
leaves no result JSON. Failures during training leave a ``failed`` result with the error.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from bench.core.config import BenchConfig, ConfigError, make_config
from bench.core.files import FolderIsAFile, atomic_torch_save, writable_folder
from bench.data import sources, staging
from bench.data.datamodule import CifarDataModule, check_shared_memory
from bench.measure import contention, environment, profiling
from bench.measure.phases import PhaseClock
from bench.results import straggler, taint
from bench.results.resultfile import (build_result, export_run_id, inherited_run_id, load_result, new_run_id,
                                      result_path, utc_now, write_json_atomic)
from bench.run import comm, dataparallel, faults, ranks, runfacts, stopping, threads, training
from bench.run.instruments import CallbackGroup, Instruments
from bench.run.interconnect import InterconnectCheck
from bench.run.model import apply_device_settings


MIN_FREE_BYTES = 2**20  # a result JSON and a run's TensorBoard file take tens of KiB; profiles more (bytes)


def check_out_dir(out_dir: str) -> None:
    """Fail before anything runs when the result folder cannot be created or written, or is full.

    Raises:
        ConfigError: with the folder and the OS's reason.
    """
    path = Path(out_dir)
    try:
        free = shutil.disk_usage(writable_folder(path)).free
    except FolderIsAFile as err:  # worded as report's --out check
        raise ConfigError(f"--out {path} is a file: a run's results go into a folder; name a folder, new or existing") from err
    except OSError as err:
        raise ConfigError(f"cannot write results to {path}: {err.strerror}; choose another --out folder") from err
    if free < MIN_FREE_BYTES:
        raise ConfigError(f"the device of {path} is full ({free // 1024} KiB free, a run needs about "
                          f"{MIN_FREE_BYTES // 2**20} MiB for its result and TensorBoard files): free space there "
                          "or choose another --out folder")


def recorded_config(config: BenchConfig) -> dict:
    """The config as a result records it: every field, plus ``data_kind``, the layout found at
    ``config.data`` (:func:`bench.data.sources.data_kind`)."""
    return {**config.to_dict(), "data_kind": sources.data_kind(config.data)}


def record_status(config: BenchConfig, status: str, reason: str, run_id: str | None = None) -> dict:
    """Write and return a result without figures: a case ``skipped`` on this hardware, or one
    ``interrupted`` before it could write its own result (e.g. by a Slurm time limit).
    ``run_id`` defaults to the inherited one, else a new one (:mod:`bench.results.resultfile`)."""
    result = build_result(run_id=run_id or inherited_run_id() or new_run_id(config.case), case=config.case, status=status, reason=reason,
                          config=recorded_config(config), started_utc=utc_now(), environment=environment.collect())
    path = result_path(config.out_dir, result["run_id"])
    try:
        write_json_atomic(result, path, exclusive=True)  # first writer wins: a run's own record stays
    except FileExistsError:
        print(f"cifar-bench: {path} exists already (written by the run itself); left as it is")
    result["path"] = str(path)
    return result


def record_lost_case(preset: str, case: str, data: str, out_dir: str, status: str, reason: str,
                     run_id: str | None = None, devices: int | None = None, num_nodes: int | None = None) -> dict:
    """:func:`record_status` for a case whose run left no record (``slurm/suite.sh``, the suite), with the
    configuration that was asked for: dp on GPUs (2 unless ``devices``), the others as given or the preset's.

    Raises:
        ConfigError: the asked-for configuration is invalid (e.g. no data set named).
    """
    config = make_config(preset, case=case, data=data, out_dir=str(out_dir), accelerator="gpu" if case == "dp" else None,
                         devices=devices or (2 if case == "dp" else None), num_nodes=num_nodes)
    return record_status(config, status, reason, run_id)


def skipped(config: BenchConfig, reason: str, run_id: str | None = None) -> dict:
    """Write and return the result of a case that cannot run on this hardware."""
    return record_status(config, "skipped", reason, run_id)


class RunInterrupted(Exception):
    """The run was stopped from outside (SIGTERM, SIGINT, Slurm); its ``interrupted`` record is written."""


class RunFailed(Exception):
    """Training or testing failed; the ``failed`` record is written. Raised from the error itself.

    Attributes:
        reason: what this rank recorded (lost ranks first, then its own error, cut short).
        path: the record's path on global rank 0 (read back: a watcher's record may have been first),
            else None.
        lost: another rank of this node was lost: this rank's own error is only the symptom.
        explained: the error is a known distributed failure whose cause the reason names
            (:func:`bench.run.faults.explain`, e.g. a rank that never joined): its traceback adds nothing.
    """

    def __init__(self, reason: str, path: str | None, lost: bool, explained: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.path, self.lost, self.explained = reason, path, lost, explained


def run_case(config: BenchConfig) -> dict | None:
    """Run one case end to end; return the result on global rank 0 (None on other ranks).

    Raises:
        bench.data.sources.DataError, bench.measure.environment.GPUUnavailableError, ConfigError: before anything runs.
        RunInterrupted: stopped by a signal, after writing an ``interrupted`` result.
        Exception: whatever broke training, after writing a ``failed`` result (naming lost ranks where known)
            and stopping the ranks this process started.
    """
    clock = PhaseClock()  # the wall time in named phases (bench.measure.phases): marks from here on
    faults.check_srun(config)
    check_out_dir(config.out_dir)
    if config.case != "dp":  # (a dp case is first asked whether this machine can run it at all, below)
        training.check_accelerator(config)
    staging.ensure_data(config)
    workers = threads.loader_workers(config)
    dm = CifarDataModule(config, num_workers=workers)
    dm.setup("fit")  # here, not in fit: a subset larger than the data set is bad input (exit 2), before any rank
    # starts, and also for a dp case that this machine then skips
    if config.case == "dp":
        if reason := dataparallel.dp_skip_reason(config):
            return skipped(config, reason)
        training.check_accelerator(config)
    check_shared_memory(config, workers)
    clock.mark("model")
    started, run_id, user_env = utc_now(), inherited_run_id() or new_run_id(config.case), comm.user_comm_env()
    export_run_id(run_id)  # the ranks Lightning's launcher starts read it back: one id per run
    comm.request_nccl_log(config, run_id)
    torch_threads = threads.set_cpu_threads(config, workers)
    plan = {"cores_per_rank": threads.cores_per_rank(config), "torch_threads": torch_threads, "loader_workers": workers}
    cores = contention.cores_given(plan["cores_per_rank"], torch_threads, workers)  # part of "same system"
    device_settings = apply_device_settings(config)  # TF32 flags: in every rank, before any GPU work
    faults.mark_launcher(config)
    tools, thread_plan = Instruments(config, run_id, clock), threads.ThreadPlan(torch_threads)
    check = InterconnectCheck(config)  # ddp: at the first setup, in the fit's process group, before fit_s
    stop = stopping.AgreedStop()  # SIGTERM: every rank stops at the same step, no per-step sync (bench.run.stopping)
    # check before tools: its time falls in the process-group window it is subtracted from (phases)
    trainer = training.build_trainer(config, run_id, [CallbackGroup([check] + tools.callbacks() + [thread_plan, stop])],
                                 tools.breakdown.actions if config.step_breakdown else None)
    module = training.build_module(config)
    recorded = recorded_config(config)
    for logger in trainer.loggers:  # rank-zero-only inside Lightning's loggers
        logger.log_hyperparams({**recorded, "run_id": run_id, "test_knobs": str(tools.knobs)})
    base = dict(run_id=run_id, case=config.case, config=recorded, started_utc=started,
                test_knobs=tools.knobs, profiled=config.profile)
    record = lambda reason: _record_failure(config.out_dir, reason, **base)  # noqa: E731 (any rank, first wins)
    watch = faults.watch(trainer, record)  # ends this rank when a rank of this node dies (bench.run.faults)
    try:
        facts = _train_and_test(config, trainer, module, dm, tools, thread_plan)
    except (faults.sigterm_exception(), KeyboardInterrupt, SystemExit) as err:  # Slurm time limit, scancel, Ctrl-C
        watch.stop()
        raise _record_interrupted(config, trainer, f"{faults.interruption(err)} during the run", base) from err
    except Exception as err:
        watch.stop()
        if getattr(trainer, "received_sigterm", False):
            # the same SIGTERM reached this rank's loader workers (`kill -- -PGID`, `timeout`): one died
            # before the agreed stop, and the loader's error is only how this rank noticed
            reason = (f"{faults.interruption(faults.sigterm_exception()())} during the run; then "
                      f"{faults.error_text(err)}")
            raise _record_interrupted(config, trainer, reason, base) from err
        raise _record_failed_run(config, trainer, err, record, base) from err
    watch.stop()
    metrics = runfacts.metrics(config, trainer, module, dm, tools.timer, facts)
    result = _write_on_rank_zero(trainer, config.out_dir, status="ok", metrics=metrics, sanity=runfacts.sanity(config, metrics),
                                 world=runfacts.world(config, trainer, facts, plan, dm.loader_options(), user_env, device_settings),
                                 profile=_profile_record(config, run_id, facts), cores_given=cores,
                                 contention=facts[0]["contention"], interconnect=check.record, phases=clock,
                                 **base)
    ranks.destroy_process_group()
    faults.wait_children(trainer, timeout_s=config.pg_timeout_s)
    if result is None:
        return None
    if config.save_weights:
        result["weights_path"] = str(_save_weights(module, Path(result["path"]).with_suffix(".weights.pt")))
    return result


def _record_interrupted(config: BenchConfig, trainer, reason: str, base: dict) -> RunInterrupted:
    """The ``interrupted`` record (rank 0; a record written first is kept), then stop the ranks this
    process started. Returns the :class:`RunInterrupted` to raise."""
    _write_on_rank_zero(trainer, config.out_dir, status="interrupted", reason=reason, exclusive=True, **base)
    faults.kill_children(trainer)
    return RunInterrupted(reason)


def _record_failed_run(config: BenchConfig, trainer, err: Exception, record, base: dict) -> RunFailed:
    """After training failed: the ``failed`` record (rank 0, naming lost ranks first, or the likely cause;
    a rank > 0 whose own error is not a lost peer, naming itself; a surviving rank when rank 0 is gone),
    then stop the ranks this process started and tidy up. Returns the :class:`RunFailed` to raise."""
    lost, own = faults.lost_children(trainer), faults.error_text(err)
    hint = faults.explain(err, config)
    if trainer.global_rank != 0 and hint is None:
        # a rank's own fault (e.g. its loader worker killed): said before this rank's sockets close,
        # after which rank 0 would only see "connection closed by peer" (first record wins)
        record(f"rank {trainer.global_rank} (host {socket.gethostname()}) failed: {own}")
    launcher_lost = faults.lost_launcher(wait_s=1.0)  # rank 0 gone (this rank was started by it)
    if lost or launcher_lost:  # the cause first: this rank's error is only how it noticed
        reason = (f"lost {'; '.join(lost)}; rank {trainer.global_rank} then failed with {own}" if lost
                  else f"{launcher_lost}; this rank then failed with {own}")
    else:
        reason = own + (f" -- likely cause: {hint}" if hint else "")
    written = _write_on_rank_zero(trainer, config.out_dir, status="failed", reason=reason, exclusive=True, **base)
    path = written["path"] if written else (record(reason) if launcher_lost else None)
    faults.kill_children(trainer)
    _remove_empty_files(Path(config.out_dir) / "tensorboard" / base["run_id"])
    ranks.destroy_process_group()
    return RunFailed(_recorded_reason(path, reason), path, bool(lost or launcher_lost), hint is not None)


def _recorded_reason(path: str | None, reason: str) -> str:
    """The reason in the record at ``path`` (a watcher may have written first), else this rank's."""
    try:
        return load_result(Path(path))["reason"] if path else reason
    except (OSError, ValueError, KeyError):
        return reason


def _record_failure(out_dir: str, reason: str, **base) -> str:
    """A ``failed`` result from any rank (a watcher): first writer wins, a later one is dropped.
    Returns the record's path (whoever wrote it)."""
    path = result_path(out_dir, base["run_id"])
    try:
        result = build_result(status="failed", reason=reason, environment=environment.collect(), **base)
        write_json_atomic(result, path, exclusive=True)
    except FileExistsError:
        pass
    return str(path)


def _remove_empty_files(folder: Path) -> None:
    """Drop 0-byte files a failed run left (TensorBoard creates its event file before writing to it)."""
    for path in folder.glob("*") if folder.is_dir() else []:
        if path.is_file() and path.stat().st_size == 0:
            path.unlink(missing_ok=True)


def _train_and_test(config: BenchConfig, trainer, module, dm: CifarDataModule, tools: Instruments,
                    thread_plan: threads.ThreadPlan) -> list[dict]:
    """Fit (unless epochs is 0) and test; return every rank's facts (collective on all ranks)."""
    profile_facts, readings = None, None  # (epochs 0: no fit, no contention readings)
    if config.epochs > 0:
        start = contention.reading()  # before and after the fit, outside the timed steps (no sampling thread)
        tools.phases.mark("fit_call")
        trainer.fit(module, datamodule=dm)
        readings = {"start": start, "end": contention.reading()}
        if tools.profiler is not None:  # gathered before test: the TensorBoard writer is still open
            profile_facts = ranks.all_gather(tools.profiler.facts)
            profiling.publish(trainer, profile_facts, tools.profiler.folder)
    tools.phases.mark("train_end")  # (marked at on_train_end already after a fit; epochs 0: the test starts here)
    trainer.test(module, datamodule=dm, verbose=False)
    tools.phases.mark("tested")
    facts = ranks.gather_rank_facts(module, {"breakdown": tools.breakdown.epochs, "nccl": comm.own_nccl_facts(),
                                             "comm_hook": tools.breakdown.comm_hook,
                                             "training_settings": training.training_settings(module),
                                             "node_gpus": environment.node_gpu_facts(),
                                             "runtime": environment.runtime_facts(),
                                             "read_back": thread_plan.facts})
    for rank, f in enumerate(facts):
        f["rank"], f["profile"] = rank, profile_facts[rank] if profile_facts else None
    facts[0]["contention"] = readings  # this process's own (rank 0 writes)
    return facts


def _profile_record(config: BenchConfig, run_id: str, facts: list[dict]) -> dict | None:
    """The result's ``profile`` section: window and each global rank's trace and tables (no table text)."""
    if not config.profile:
        return None
    per_rank = [{"hostname": f["hostname"], **{k: v for k, v in (f["profile"] or {}).items() if k != "table_text"}}
                for f in facts]
    return {"folder": str(Path(config.out_dir) / "profiles" / run_id), "per_rank": per_rank,
            "note": "times of a profiled run include the profiler's overhead; never a benchmark figure"}


def _save_weights(module, path: Path) -> Path:
    """The trained network's state_dict (no DataParallel prefix), written atomically."""
    atomic_torch_save(dataparallel.bare_network(module).state_dict(), path)
    return path


def _write_on_rank_zero(trainer, out_dir: str, exclusive: bool = False, **fields) -> dict | None:
    """On global rank 0: build the result (with the environment facts), write it, and return it
    with its ``path``. Other ranks write nothing and return None. ``exclusive``: keep a record
    a watcher wrote first (bench.run.faults)."""
    if trainer.global_rank != 0:
        return None
    cores = fields.pop("cores_given", None)  # the CPU the run was given (bench.measure.contention)
    readings, clock = fields.pop("contention", None), fields.pop("phases", None)
    result = build_result(environment={**environment.collect(), **({"cores_given": cores} if cores else {})}, **fields)
    if clock is not None:  # (the interconnect check's own seconds are read from the result)
        result["metrics"]["phases"] = clock.record(result["metrics"]["wall_s"], result.get("interconnect"))
        result["straggler"] = straggler.of_result(result)  # a rank that held the others back, or none (why)
    if readings:  # how contended the machine was during the fit, and whether that makes it no figure
        result["contention"] = {**readings, "classification": taint.classify(readings["start"], readings["end"]),
                                "rule": "off" if os.environ.get(taint.RULE_ENV) == "off" else "on"}
    try:
        result["path"] = str(write_json_atomic(result, result_path(out_dir, result["run_id"]), exclusive=exclusive))
    except FileExistsError:
        result["path"] = str(result_path(out_dir, result["run_id"]))
    return result
