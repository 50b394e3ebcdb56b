"""The prepared GPU check (bench.selfcheck.gpu_check): its plan, and its CPU mode end to end on two cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.selfcheck.gpu_check import PLAN, commands, correctness, suite_ddp_devices

REPO = Path(__file__).resolve().parent.parent


def test_plan_covers_what_the_gpu_check_must_run(tmp_path):
    plan = commands(".gpu-check/cifar10-jpeg.tar.gz", tmp_path, cpu=False, epochs=2)
    assert list(plan) == list(PLAN)
    joined = {name: " ".join(cmd) for name, cmd in plan.items()}
    assert all("--preset full --epochs 2" in c and "--data .gpu-check/cifar10-jpeg.tar.gz" in c for c in joined.values())
    assert {p for p in ("uint8", "device", "pil") if any(f"--data-path {p}" in c for c in joined.values())} == \
        {"uint8", "device", "pil"}
    assert "--precision bf16-mixed" in joined["bf16-mixed"] and "--channels-last" in joined["bf16-channels-last"]
    assert "--compile" in joined["compile"] and "--compile" not in joined["baseline-device"]  # compile on / off
    assert "--no-step-breakdown" in joined["breakdown-off"] and "--model resnet18" in joined["resnet18-bf16"]
    assert "--case ddp --devices 1" in joined["ddp-1"]  # NCCL on a GPU (gloo in the CPU mode)
    cpu = commands("synthetic", tmp_path, cpu=True, epochs=2, only=["bf16-mixed"])
    assert list(cpu) == ["bf16-mixed"] and "--precision" not in cpu["bf16-mixed"]


def test_cpu_mode_runs_cases_and_writes_table_and_json(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, "-m", "bench.selfcheck.gpu_check", "--cpu", "--data", "synthetic", "--out", str(out),
                           "--only", "baseline-uint8,ddp-1"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "cpu" and [r["case"] for r in report["rows"]] == ["baseline-uint8", "ddp-1"]
    assert all(r["status"] == "ok" and r["img_s_last_epoch"] > 0 for r in report["rows"])
    assert report["rows"][1]["backend"] == "gloo" and report["rows"][0]["step_ms"] > 0
    assert report["versions"]["torch"] and report["versions"]["lightning"]  # what really ran
    assert "baseline-uint8" in proc.stdout and "gpu-check:" in proc.stdout
    assert [r["gpu_fixes"] for r in report["rows"]] == ["item6:ok item12:ok", "item6:ok item12:ok item4:ok"]


def _gpu_result(**world_over) -> dict:
    world = {"training_settings": {"metric_validate_args": False, "dp_replica_autocast": {"enabled": True,
                                                                                         "dtype": "bfloat16"}},
             "device_settings": {"cudnn_benchmark": True}, "communication": {"network": "Socket"}, **world_over}
    return {"status": "ok", "world": world, "metrics": {"first_epoch_s": 3.0, "steady_throughput_img_s": 9e4},
            "config": {"case": "dp", "precision": "bf16-mixed", "cudnn_benchmark": True, "accelerator": "gpu"}}


def test_correctness_names_each_gpu_fix_that_did_not_hold():
    assert correctness("dp-bf16", _gpu_result(), gpu=True) == {"item6": "ok", "item12": "ok", "item7": "ok",
                                                               "item1": "ok"}
    fp16 = _gpu_result(training_settings={"metric_validate_args": True,
                                          "dp_replica_autocast": {"enabled": True, "dtype": "float16"}},
                       device_settings={"cudnn_benchmark": False})
    checks = correctness("dp-bf16", fp16, gpu=True)
    assert checks["item1"].startswith("FAIL") and "float16" in checks["item1"]
    assert checks["item6"].startswith("FAIL") and checks["item7"].startswith("FAIL")
    ddp = {**_gpu_result(communication={"network": None}), "config": {"case": "ddp", "cudnn_benchmark": True}}
    assert correctness("ddp-1", ddp, gpu=True)["item4"].startswith("FAIL")
    assert correctness("x", {"status": "skipped"}, gpu=True) == {}  # a skipped or failed case shows nothing


def test_suite_ddp_devices_check_reads_the_suite_default(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert suite_ddp_devices() == "ok: ddp on 8 device(s) x 1 node(s) from visible GPUs; 8 visible"
    monkeypatch.setattr("suite.test_cases._devices_and_nodes_sourced", lambda config: (2, 1, "--bench-devices"))
    assert suite_ddp_devices().startswith("FAIL: ddp on 2 device(s)")
