"""The prepared GPU check (bench.selfcheck.gpu_check): its plan and estimate, true statuses, the versions it
keeps, its guards for non-public torch/Lightning modules, and its CPU mode end to end on three cases."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.selfcheck.gpu_check import (PRIVATE_IMPORTS, commands, correctness, main, suite_ddp_devices, true_status,
                                       versions)
from bench.selfcheck.gpu_plan import ACCURACY_FLOOR, BUDGET_S, NOT_ON_ONE_GPU, PLAN, SYNC_PROBE, Costs, plan_estimate

REPO = Path(__file__).resolve().parent.parent


def test_plan_covers_what_the_gpu_check_must_run(tmp_path):
    plan = commands(".gpu-check/cifar10-jpeg.tar.gz", tmp_path, cpu=False, epochs=2)
    assert list(plan) == [*PLAN, SYNC_PROBE]
    joined = {name: " ".join(cmd) for name, cmd in plan.items() if name != SYNC_PROBE}
    assert all(f"--preset full --epochs 2 --accuracy-floor {ACCURACY_FLOOR}" in c and
               "--data .gpu-check/cifar10-jpeg.tar.gz" in c for c in joined.values())
    assert {p for p in ("uint8", "device", "pil") if any(f"--data-path {p}" in c for c in joined.values())} == \
        {"uint8", "device", "pil"}
    assert "--compile" in joined["compile"] and "--compile" not in joined["baseline-device"]  # compile on / off
    assert "--no-step-breakdown" in joined["breakdown-off"]
    assert "--model resnet18 --precision bf16-mixed --channels-last" in joined["resnet18-bf16-cl"]
    assert "--case ddp --devices 1" in joined["ddp-1"]  # NCCL on a GPU (gloo in the CPU mode)
    assert plan[SYNC_PROBE][-2:] == ["--out", str(tmp_path / "runs" / SYNC_PROBE)]
    cpu = commands("synthetic", tmp_path, cpu=True, epochs=2, only=["resnet18-bf16-cl"])
    assert list(cpu) == ["resnet18-bf16-cl"] and "--precision" not in cpu["resnet18-bf16-cl"]


def test_plan_fits_the_budget_from_fixed_costs():
    estimate = plan_estimate([*PLAN, SYNC_PROBE])
    assert sum(estimate.values()) <= BUDGET_S, estimate
    assert estimate["compile"] >= Costs().compile_s and estimate["baseline-uint8"] > estimate["baseline-device"]
    assert sum(plan_estimate([*PLAN, SYNC_PROBE], epochs=20).values()) > BUDGET_S  # the full 20 epochs would not


def test_dry_run_lists_plan_estimate_and_what_one_gpu_cannot_show(capsys, tmp_path):
    assert main(["--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} (~" in out for name in [*PLAN, SYNC_PROBE]) and "on one H100-class GPU (budget 300 s)" in out
    assert all(f"not exercisable on one GPU: {item}" in out for item in NOT_ON_ONE_GPU)
    assert "does not prove the Apptainer image" in out and not (tmp_path / "gpu_check.json").exists()


@pytest.mark.parametrize("result, code, want", [
    ({"status": "ok", "sanity": {"passed": True}}, 0, "ok"),
    ({"status": "ok", "sanity": {"passed": False}}, 1, "sanity-failed"),
    ({"status": "ok", "sanity": {"passed": False}}, 0, "sanity-failed"),
    ({"status": "ok", "sanity": {"passed": True}}, 3, "failed (exit 3)"),
    ({"status": "failed"}, 1, "failed (exit 1)"),
    ({"status": "skipped"}, 0, "skipped"),
    (None, 1, "no result (exit 1)"),
    (None, None, "timeout"),
])
def test_each_row_shows_the_runs_true_status(result, code, want):
    assert true_status(result, code) == want


def test_versions_keep_the_keys_the_results_write():
    from bench.measure import environment

    env = environment.collect()
    kept = versions([None, {"environment": env}])
    for key in ("torch_cuda_build", "cuda_driver", "gpu_names", "gpu_count", "cudnn", "nccl", "torch", "lightning"):
        assert key in kept and kept[key] == env[key], key


def _gpu_result(**world_over) -> dict:
    world = {"training_settings": {"metric_validate_args": False}, "device_settings": {"cudnn_benchmark": True},
             "communication": {"network": "Socket"}, **world_over}
    return {"status": "ok", "world": world,
            "metrics": {"first_epoch_s": 3.0, "steady_throughput_img_s": 9e4, "warmup_s": 0.1,
                        "train_images_per_epoch": 50000, "steps_per_epoch": 196, "new_shape_steps": [[0, 195]]},
            "config": {"case": "baseline", "cudnn_benchmark": True, "accelerator": "gpu", "global_batch_size": 256}}


def test_correctness_names_each_gpu_fix_that_did_not_hold():
    assert correctness("compile", _gpu_result(), gpu=True) == {"16.item6": "ok", "16.item12": "ok", "31.item3": "ok",
                                                               "16.item7": "ok"}
    bad = _gpu_result(training_settings={"metric_validate_args": True}, device_settings={"cudnn_benchmark": False})
    bad["metrics"]["new_shape_steps"] = []
    checks = correctness("compile", bad, gpu=True)
    assert all(checks[k].startswith("FAIL") for k in ("16.item6", "16.item7", "31.item3")), checks
    ddp = {**_gpu_result(communication={"network": None}), "config": {"case": "ddp", "cudnn_benchmark": True}}
    assert correctness("ddp-1", ddp, gpu=True)["16.item4"].startswith("FAIL")
    assert correctness("x", {"status": "failed"}, gpu=True) == {}  # a failed case shows nothing
    probe = {"status": "ok", "train": {"steps": 6, "host_reads": 0, "cuda_syncs": 0},
             "test": {"steps": 2, "host_reads": 0, "cuda_syncs": 4}}
    assert correctness(SYNC_PROBE, probe, gpu=True)["31.item4"] == "FAIL: 4 host syncs in a test pass"


def test_suite_ddp_devices_check_reads_the_suite_default(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert suite_ddp_devices() == "ok: ddp on 8 device(s) x 1 node(s) from visible GPUs; 8 visible"
    monkeypatch.setattr("suite.test_cases._devices_and_nodes_sourced", lambda config: (2, 1, "--bench-devices"))
    assert suite_ddp_devices().startswith("FAIL: ddp on 2 device(s)")


def test_the_checks_run_path_imports_without_the_private_names():
    """A lent machine's own Lightning/torch may lack a non-public name: with every one of them gone (the
    comm-hooks module itself hidden, the others' names deleted), the check and what it runs (bench run's
    runner, faults and breakdown, the sync probe) still import and run their guarded paths, and the check
    names each missing one."""
    on_path = [key for key, user in PRIVATE_IMPORTS.items() if "parity" not in user]
    code = ("import importlib, sys\n"
            f"for module, name in {on_path!r}:\n"
            "    if module.startswith('torch.distributed.algorithms'): sys.modules[module] = None\n"
            "    else: delattr(importlib.import_module(module), name)\n"
            "import bench.selfcheck.gpu_check as g, bench.selfcheck.syncprobe, bench.run.runner, bench.cli\n"
            "from bench.measure import breakdown; assert breakdown.allreduce_hook is None\n"
            "from bench.run import faults; faults._quiet_lightning_observer()\n"
            "assert faults.interruption(KeyboardInterrupt()).startswith('SIGINT')\n"
            "print(g.private_imports())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert all(found[f"{m}.{n}"].startswith("missing (") for m, n in on_path), found


def test_any_run_not_ok_makes_the_check_exit_non_zero(monkeypatch, tmp_path):
    from bench.selfcheck import gpu_check

    rows = [{"case": "baseline-uint8", "status": "sanity-failed", "checks": "-", "reason": "accuracy 0.2 < 0.35"}]
    monkeypatch.setattr(gpu_check, "run_plan", lambda plan, timeouts: (rows, [None]))
    assert gpu_check.main(["--cpu", "--only", "baseline-uint8", "--out", str(tmp_path)]) == 1
    assert json.loads((tmp_path / "gpu_check.json").read_text())["rows"][0]["status"] == "sanity-failed"


def test_cpu_mode_runs_cases_and_writes_table_and_json(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, "-m", "bench.selfcheck.gpu_check", "--cpu", "--data", "synthetic", "--out",
                           str(out), "--only", f"baseline-uint8,ddp-1,{SYNC_PROBE}"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "cpu" and [r["case"] for r in report["rows"]] == ["baseline-uint8", "ddp-1", SYNC_PROBE]
    assert all(r["status"] == "ok" for r in report["rows"])
    assert all(r["img_s_last_epoch"] > 0 for r in report["rows"][:2])
    assert report["rows"][1]["backend"] == "gloo" and report["rows"][0]["step_ms"] > 0
    assert report["versions"]["torch"] and report["versions"]["lightning"]  # what really ran
    assert "torch_cuda_build" in report["versions"] and set(report["private_imports"].values()) == {"ok"}
    assert "baseline-uint8" in proc.stdout and "does not prove the Apptainer image" in proc.stdout
    assert [r["checks"] for r in report["rows"]] == ["16.item6:ok 16.item12:ok 31.item3:ok",
                                                     "16.item6:ok 16.item12:ok 31.item3:ok 16.item4:ok",
                                                     "31.item4:ok 31.train_syncs:ok"]
    probe = report["rows"][2]
    assert probe["test_host_reads"] == 0 and probe["host_reads_per_step"] == 0 and probe["cuda_syncs_per_step"] is None


def test_a_failed_run_makes_the_check_fail(tmp_path):
    """A case that fails (here: an unknown data path) shows its true status and the check exits non-zero."""
    from bench.selfcheck import gpu_check

    plan = {"broken": [sys.executable, "-m", "bench", "run", "--preset", "smoke", "--data", "synthetic",
                       "--data-path", "nonsense", "--out", str(tmp_path)]}
    rows, results = gpu_check.run_plan(plan, {"broken": 300})
    assert rows[0]["status"] == "no result (exit 2)" and results == [None] and rows[0]["reason"]


def test_missing_packages_are_named(monkeypatch):
    import importlib.util

    from bench.selfcheck import gpu_check

    assert gpu_check.missing_packages() == {}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tabulate" else real(name, *a))
    assert list(gpu_check.missing_packages()) == ["tabulate"]


@pytest.mark.parametrize("cpu", [True, False])
def test_sync_probe_runs_past_its_window_in_both_modes(cpu, tmp_path):
    from bench.selfcheck import syncprobe

    config = syncprobe.probe_config(cpu, str(tmp_path))
    steps = -(-config.train_samples // config.global_batch_size)
    assert steps >= syncprobe.FIRST_STEP + syncprobe.TRAIN_STEPS and config.accelerator == ("cpu" if cpu else "gpu")


def test_only_with_an_unknown_case_is_bad_input_not_a_pass(capsys):
    """From a trial: `--only nosuch` ran nothing and said the GPU-path fixes hold (exit 0)."""
    from bench.selfcheck import gpu_check

    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--only", "nosuch", "--dry-run"])
    assert stop.value.code == 2 and "no case named nosuch" in capsys.readouterr().err
