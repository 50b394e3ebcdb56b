"""The parts of a result read from a finished fit: the figures (``metrics``), the correctness checks
kept apart from them (``sanity``) and the facts of what ran (``world``), from the Trainer, the module,
the DataModule, the timer and each rank's gathered facts (:func:`bench.run.runner._train_and_test`).
"""

from __future__ import annotations

import math

from bench.core.config import BenchConfig
from bench.data.datamodule import CifarDataModule
from bench.measure import breakdown, environment
from bench.measure.timing import TrainingTimer, steady_figures, wall_seconds
from bench.run import comm, training


def sanity(config: BenchConfig, metrics: dict) -> dict:
    """Correctness checks, kept apart from the performance figures."""
    # no training (epochs 0: evaluation only) has no loss to check
    loss_ok = config.epochs == 0 or (metrics.get("train_loss") is not None and math.isfinite(metrics["train_loss"]))
    acc = metrics.get("test_accuracy")
    acc_ok = (not metrics.get("accuracy_meaningful")) or (acc is not None and acc >= config.accuracy_floor)
    return {"loss_finite": loss_ok, "accuracy_floor": config.accuracy_floor, "accuracy_ok": acc_ok,
            "passed": loss_ok and acc_ok}


def world(config: BenchConfig, trainer, facts: list[dict], plan: dict, loader: dict, user_env: dict,
           device_settings: dict) -> dict:
    backend = getattr(trainer.strategy, "_process_group_backend", None)
    mine = facts[0].get("read_back") or {}  # rank 0's, read inside the running rank (threads.ThreadPlan)
    return {
        "world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
        "devices_per_node": config.devices, "backend": backend,
        "cluster_environment": mine.get("cluster_environment"),
        "hostnames": [f["hostname"] for f in facts],
        "global_batch_size": config.global_batch_size, "per_device_batch_size": config.per_device_batch_size,
        "params_identical": len({f["param_digest"] for f in facts}) == 1,
        "torch_threads_per_rank": mine.get("torch_threads"),  # torch.get_num_threads() during training
        "loader_workers_per_rank": mine.get("loader_workers"),  # the DataLoader's num_workers during training
        "thread_plan": plan,  # what bench.run.threads planned: cores of the rank, threads, workers
        "read_back_per_rank": [f.get("read_back") for f in facts],
        "runtime_per_rank": [f.get("runtime") for f in facts],  # each rank's Python prefix and container image
        # what the loader really did (persistence needs workers), from the datamodule itself
        "loader_effective": {k: loader[k] for k in ("pin_memory", "persistent_workers")},
        # communication settings a user may have tuned (e.g. NCCL_SOCKET_IFNAME, NCCL_IB_HCA)
        "comm_env": user_env,
        "communication": comm.communication(backend, [f.get("nccl") for f in facts], user_env, facts[0].get("comm_hook")),
        "device_settings": device_settings,  # TF32 flags as torch reports them (bench.run.model.apply_device_settings)
        "training_settings": facts[0].get("training_settings"),  # read back from the module (training.training_settings)
        "nodes": environment.node_hardware(facts),  # GPU name, driver, MIG mode of every node; mixed flagged
    }


def metrics(config: BenchConfig, trainer, module, dm: CifarDataModule, timer: TrainingTimer,
             facts: list[dict]) -> dict:
    images = len(dm.train_set) if dm.train_set is not None else 0
    train_s = sum(timer.epoch_train_s)
    return {
        "fit_s": timer.fit_s, "epoch_train_s": timer.epoch_train_s,
        "throughput_img_s": images * len(timer.epoch_train_s) / train_s if train_s else None,
        "wall_s": wall_seconds(), "optimizer_steps": trainer.global_step,
        **steady_figures(timer, images),  # start-up and new batch shapes apart
        "steps_per_epoch": len(dm.global_batch_sizes), "train_images_per_epoch": images,
        "train_loss": sum(f["loss_mean"] for f in facts) / len(facts) if config.epochs else None,
        # fraction of the (augmented) training images of the last epoch classified right, all ranks
        "train_accuracy": module.train_accuracies[-1] if module.train_accuracies else None,
        **module.test_results,
        "accuracy_meaningful": config.data != "synthetic",
        "parameters": training.trained_parameters(module),
        "step_breakdown": {"parts": list(breakdown.PARTS), "units": "s", "see": "bench/measure/breakdown.py",
                           "per_rank": [{"rank": f["rank"], "hostname": f["hostname"], "epochs": f["breakdown"]}
                                        for f in facts]} if config.step_breakdown else None,
    }
