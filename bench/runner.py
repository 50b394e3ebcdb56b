"""One benchmark run from config to result JSON: checks, fit, test, gather, write (rank 0).

Order matters for clear failures: the configuration, the accelerator and the data set are
checked before any process group exists, so bad input fails every process with a message and
leaves no result JSON. Failures during training leave a ``failed`` result with the error.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from lightning.pytorch.utilities.exceptions import SIGTERMException

from bench import breakdown, cases, comm, environment, profiling
from bench.config import BenchConfig, ConfigError
from bench.data import CifarDataModule, atomic_torch_save
from bench.knobs import StepSleep, active_knobs
from bench.model import apply_device_settings
from bench.results import (build_result, export_run_id, inherited_run_id, new_run_id, result_path, utc_now,
                           write_json_atomic)
from bench.profiling import StepProfiler
from bench.timing import TrainingTimer, steady_state, wall_seconds


def _sanity(config: BenchConfig, metrics: dict) -> dict:
    """Correctness checks, kept apart from the performance figures."""
    # no training (epochs 0: evaluation only) has no loss to check
    loss_ok = config.epochs == 0 or (metrics.get("train_loss") is not None and math.isfinite(metrics["train_loss"]))
    acc = metrics.get("test_accuracy")
    acc_ok = (not metrics.get("accuracy_meaningful")) or (acc is not None and acc >= config.accuracy_floor)
    return {"loss_finite": loss_ok, "accuracy_floor": config.accuracy_floor, "accuracy_ok": acc_ok,
            "passed": loss_ok and acc_ok}


def _world(config: BenchConfig, trainer, facts: list[dict], threads: int, loader: dict, user_env: dict,
           device_settings: dict) -> dict:
    backend = getattr(trainer.strategy, "_process_group_backend", None)
    return {
        "world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
        "devices_per_node": config.devices, "backend": backend,
        "cluster_environment": _cluster_environment(trainer),
        "hostnames": [f["hostname"] for f in facts],
        "global_batch_size": config.global_batch_size, "per_device_batch_size": config.per_device_batch_size,
        "params_identical": len({f["param_digest"] for f in facts}) == 1,
        "torch_threads_per_rank": threads,
        "loader_workers_per_rank": loader["num_workers"],  # config num_workers resolved (-1 = auto)
        # what the loader really did (persistence needs workers), from the datamodule itself
        "loader_effective": {k: loader[k] for k in ("pin_memory", "persistent_workers")},
        # communication settings a user may have tuned (e.g. NCCL_SOCKET_IFNAME, NCCL_IB_HCA)
        "comm_env": user_env,
        "communication": comm.communication(backend, [f.get("nccl") for f in facts], user_env, facts[0].get("comm_hook")),
        "device_settings": device_settings,  # TF32 flags as torch reports them (bench.model.apply_device_settings)
        "training_settings": facts[0].get("training_settings"),  # read back from the module (cases.training_settings)
        "nodes": environment.node_hardware(facts),  # GPU name, driver, MIG mode of every node; mixed flagged
    }


def _cluster_environment(trainer) -> str | None:
    """Who started the ranks: e.g. "SLURMEnvironment (processes started by srun)"."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None:
        return None
    started = "srun/external" if env.creates_processes_externally else "Lightning's launcher"
    return f"{type(env).__name__} (processes started by {started})"


def _metrics(config: BenchConfig, trainer, module, dm: CifarDataModule, timer: TrainingTimer,
             facts: list[dict]) -> dict:
    images = len(dm.train_set) if dm.train_set is not None else 0
    train_s = sum(timer.epoch_train_s)
    return {
        "fit_s": timer.fit_s, "epoch_train_s": timer.epoch_train_s,
        "throughput_img_s": images * len(timer.epoch_train_s) / train_s if train_s else None,
        "wall_s": wall_seconds(), "optimizer_steps": trainer.global_step,
        **steady_state(timer.epoch_train_s, timer.warmup_s, timer.warmup_images, images),  # start-up apart
        "steps_per_epoch": len(dm.global_batch_sizes), "train_images_per_epoch": images,
        "train_loss": sum(f["loss_mean"] for f in facts) / len(facts) if config.epochs else None,
        # fraction of the (augmented) training images of the last epoch classified right, all ranks
        "train_accuracy": module.train_accuracies[-1] if module.train_accuracies else None,
        **module.test_results,
        "accuracy_meaningful": config.data != "synthetic",
        "parameters": cases.trained_parameters(module),
        "step_breakdown": {"parts": list(breakdown.PARTS), "units": "s", "see": "bench/breakdown.py",
                           "per_rank": [{"rank": f["rank"], "hostname": f["hostname"], "epochs": f["breakdown"]}
                                        for f in facts]} if config.step_breakdown else None,
    }


def check_out_dir(out_dir: str) -> None:
    """Fail before anything runs when the result folder cannot be created or written.

    Raises:
        ConfigError: with the folder and the OS's reason.
    """
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # a private probe: ranks may check at the same time
            pass
    except OSError as err:
        raise ConfigError(f"cannot write results to {path}: {err.strerror}; choose another --out folder") from err


def record_status(config: BenchConfig, status: str, reason: str, run_id: str | None = None) -> dict:
    """Write and return a result without figures: a case ``skipped`` on this hardware, or one
    ``interrupted`` before it could write its own result (e.g. by a Slurm time limit).
    ``run_id`` defaults to the inherited one, else a new one (:mod:`bench.results`)."""
    result = build_result(run_id=run_id or inherited_run_id() or new_run_id(config.case), case=config.case, status=status, reason=reason,
                          config=config.to_dict(), started_utc=utc_now(), environment=environment.collect())
    result["path"] = str(write_json_atomic(result, result_path(config.out_dir, result["run_id"])))
    return result


def skipped(config: BenchConfig, reason: str, run_id: str | None = None) -> dict:
    """Write and return the result of a case that cannot run on this hardware."""
    return record_status(config, "skipped", reason, run_id)


class Instruments:
    """The measuring callbacks of one run: timer, per-step breakdown, optional profiler, test knobs."""

    def __init__(self, config: BenchConfig, run_id: str) -> None:
        self.timer, self.breakdown, self.knobs = TrainingTimer(), breakdown.StepBreakdown(), active_knobs()
        self.profiler, self.step_breakdown = None, config.step_breakdown
        if config.profile:
            self.profiler = StepProfiler(Path(config.out_dir) / "profiles" / run_id, config.profile_wait,
                                         config.profile_warmup, config.profile_active)

    def callbacks(self) -> list:
        # Order matters where hooks coincide: the knob's sleep lies inside the timed steps; the
        # breakdown marks a step's end before the timer's epoch barrier; the profiler writes last.
        knob = [StepSleep(self.knobs)] if self.knobs else []
        return knob + ([self.breakdown] if self.step_breakdown else []) + [self.timer] + \
            ([self.profiler] if self.profiler else [])


def run_case(config: BenchConfig) -> dict | None:
    """Run one case end to end; return the result on global rank 0 (None on other ranks).

    Raises:
        bench.sources.DataError, bench.environment.GPUUnavailableError: before anything runs.
        Exception: whatever broke training, after writing a ``failed`` result.
    """
    if config.case == "dp" and (reason := cases.dp_skip_reason(config)):
        return skipped(config, reason)
    cases.check_accelerator(config)
    check_out_dir(config.out_dir)
    started, run_id, user_env = utc_now(), inherited_run_id() or new_run_id(config.case), comm.user_comm_env()
    export_run_id(run_id)  # the ranks Lightning's launcher starts read it back: one id per run
    comm.request_nccl_log(config, run_id)
    workers = cases.loader_workers(config)
    threads = cases.set_cpu_threads(config, workers)
    device_settings = apply_device_settings(config)  # TF32 flags: in every rank, before any GPU work
    cases.ensure_data(config)
    tools = Instruments(config, run_id)
    trainer = cases.build_trainer(config, run_id, tools.callbacks(),
                                 tools.breakdown.actions if config.step_breakdown else None)
    module, dm = cases.build_module(config), CifarDataModule(config, num_workers=workers)
    for logger in trainer.loggers:  # rank-zero-only inside Lightning's loggers
        logger.log_hyperparams({**config.to_dict(), "run_id": run_id, "test_knobs": str(tools.knobs)})
    base = dict(run_id=run_id, case=config.case, config=config.to_dict(), started_utc=started,
                test_knobs=tools.knobs, profiled=config.profile)
    try:
        facts = _train_and_test(config, trainer, module, dm, tools)
    except (SIGTERMException, KeyboardInterrupt, SystemExit) as err:  # Slurm time limit, scancel, Ctrl-C
        _write_on_rank_zero(trainer, config.out_dir, status="interrupted", reason=f"{type(err).__name__} during the run",
                            **base)
        raise
    except Exception as err:
        _write_on_rank_zero(trainer, config.out_dir, status="failed", reason=f"{type(err).__name__}: {err}", **base)
        cases.destroy_process_group()
        raise
    metrics = _metrics(config, trainer, module, dm, tools.timer, facts)
    result = _write_on_rank_zero(trainer, config.out_dir, status="ok", metrics=metrics, sanity=_sanity(config, metrics),
                                 world=_world(config, trainer, facts, threads, dm.loader_options(), user_env, device_settings),
                                 profile=_profile_record(config, run_id, facts), **base)
    cases.destroy_process_group()
    if result is None:
        return None
    if config.save_weights:
        result["weights_path"] = str(_save_weights(module, Path(result["path"]).with_suffix(".weights.pt")))
    return result


def _train_and_test(config: BenchConfig, trainer, module, dm: CifarDataModule, tools: Instruments) -> list[dict]:
    """Fit (unless epochs is 0) and test; return every rank's facts (collective on all ranks)."""
    profile_facts = None
    if config.epochs > 0:
        trainer.fit(module, datamodule=dm)
        if tools.profiler is not None:  # gathered before test: the TensorBoard writer is still open
            profile_facts = cases.all_gather(tools.profiler.facts)
            profiling.log_tables(trainer, profile_facts)
    trainer.test(module, datamodule=dm, verbose=False)
    facts = cases.gather_rank_facts(module, {"breakdown": tools.breakdown.epochs, "nccl": comm.own_nccl_facts(),
                                             "comm_hook": tools.breakdown.comm_hook,
                                             "training_settings": cases.training_settings(module),
                                             "node_gpus": environment.node_gpu_facts()})
    for rank, f in enumerate(facts):
        f["rank"], f["profile"] = rank, profile_facts[rank] if profile_facts else None
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
    atomic_torch_save(cases.bare_network(module).state_dict(), path)
    return path


def _write_on_rank_zero(trainer, out_dir: str, **fields) -> dict | None:
    """On global rank 0: build the result (with the environment facts), write it, and return it
    with its ``path``. Other ranks write nothing and return None."""
    if trainer.global_rank != 0:
        return None
    result = build_result(environment=environment.collect(), **fields)
    result["path"] = str(write_json_atomic(result, result_path(out_dir, result["run_id"])))
    return result
