"""The prepared GPU check: the product's configurations on one GPU, one table, one JSON, ~5 minutes.

    make gpu-check                                   # copies the data archive into .gpu-check/, then runs:
    PYTHONPATH=$PWD python3 -m bench.selfcheck.gpu_check --data .gpu-check/cifar10-jpeg.tar.gz --out runs/gpu-check
    PYTHONPATH=$PWD python3 -m bench.selfcheck.gpu_check --dry-run        # print the plan, run nothing
    PYTHONPATH=$PWD python3 -m bench.selfcheck.gpu_check --cpu --data synthetic --only baseline-uint8   # CPU mode (tests)

It runs from the source tree (``PYTHONPATH``) in whatever Python environment has torch and
Lightning, e.g. a lent GPU machine's own (Python 3.12, its own torch, no network), and records the
versions that really ran (each result's ``environment``). On the ``full`` preset (2 epochs by
default, so the whole check fits in about 5 minutes on one H200) it runs, as ``python -m bench run``:
the baseline per data path; ``bf16-mixed``; ``channels_last`` with bf16; ``torch.compile`` on and
off; the per-step breakdown on and off; resnet18; and ddp with world size 1 on NCCL. ``--cpu``
runs the same plan on the CPU (gloo, 32-bit where bf16 would only slow it) with the smoke preset.

Each row's ``gpu_fixes`` says which of issue 16's GPU-path fixes the case showed to hold
(:func:`correctness`). Exit status: 0 every case ran ok (dp: or was skipped on one GPU) and every
fix held; 1 otherwise (the table still shows the others).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.core.exitcodes import ExitCode

# name -> extra `bench run` options (on top of the preset, epochs and data)
PLAN: dict[str, list[str]] = {
    "baseline-uint8": ["--data-path", "uint8"],
    "baseline-device": ["--data-path", "device"],
    "baseline-pil": ["--data-path", "pil"],
    "bf16-mixed": ["--data-path", "device", "--precision", "bf16-mixed"],
    "bf16-channels-last": ["--data-path", "device", "--precision", "bf16-mixed", "--channels-last"],
    "compile": ["--data-path", "device", "--compile"],
    "breakdown-off": ["--data-path", "device", "--no-step-breakdown"],
    "resnet18-bf16": ["--data-path", "device", "--model", "resnet18", "--precision", "bf16-mixed", "--channels-last"],
    "ddp-1": ["--case", "ddp", "--devices", "1", "--data-path", "device"],
    # dp needs >= 2 GPUs: on one GPU it is recorded as skipped with its reason (item 1 then unchecked)
    "dp-bf16": ["--case", "dp", "--data-path", "device", "--precision", "bf16-mixed"],
}
_CPU_DROP = {"--precision", "bf16-mixed"}  # bf16 on CPU only slows the CPU mode down; the rest runs as planned


def commands(data: str, out: Path, cpu: bool, epochs: int, only: list[str] | None = None) -> dict[str, list[str]]:
    """The ``python -m bench run`` command of each planned case (pure)."""
    base = ["--preset", "smoke", "--train-samples", "640", "--test-samples", "200"] if cpu else \
        ["--preset", "full", "--epochs", str(epochs)]
    plan = {}
    for name, extra in PLAN.items():
        if only and name not in only:
            continue
        extra = [a for a in extra if not (cpu and a in _CPU_DROP)]
        case = [] if "--case" in extra else ["--case", "baseline"]
        plan[name] = [sys.executable, "-m", "bench", "run", *case, *base, "--data", data,
                      "--out", str(out / "runs" / name), *extra]
    return plan


def row(name: str, result: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    """One table row from a result (None: the case left no result)."""
    if result is None:
        return {"case": name, "status": "no result", "wall_s": round(seconds, 1)}
    m, c = result.get("metrics") or {}, result.get("config") or {}
    epochs = m.get("epoch_train_s") or []
    images = m.get("train_images_per_epoch") or 0
    bd = (((m.get("step_breakdown") or {}).get("per_rank") or [{}])[0].get("epochs") or [{}])[-1]
    return {"case": name, "status": result.get("status"), "model": c.get("model"), "precision": c.get("precision"),
            "data_path": c.get("data_path"), "fit_s": m.get("fit_s"),
            "img_s_last_epoch": images / epochs[-1] if epochs and images else None,
            "test_accuracy": m.get("test_accuracy"),
            "step_ms": 1000 * bd["step_s"]["median"] if "step_s" in bd else None,
            "data_wait_ms": 1000 * bd["data_wait_s"]["median"] if "data_wait_s" in bd else None,
            "backend": (result.get("world") or {}).get("backend"), "wall_s": round(seconds, 1),
            "reason": result.get("reason")}


def correctness(name: str, result: dict[str, Any] | None, gpu: bool) -> dict[str, str]:
    """The GPU-path fixes this case can show (issue 16's items), each "ok", "FAIL: why" or "n/a" (pure).

    item 1: dp replicas compute in the run's precision (``world.training_settings.dp_replica_autocast``);
    item 4: the NCCL transport was read back (``world.communication.network``) on ddp;
    item 6: no argument validation in the accuracy metric (``training_settings.metric_validate_args``);
    item 7: cuDNN's autotuner on for GPU runs, as recorded and as torch reports it;
    item 12: the first epoch and a steady-state throughput recorded apart (``metrics.first_epoch_s``).
    (Item 3, the suite's ddp devices, is a suite default: tests/test_gpu_paths.py fakes device counts.)
    """
    if not result or result.get("status") != "ok":
        return {}
    world, m, c = result.get("world") or {}, result.get("metrics") or {}, result.get("config") or {}
    settings = world.get("training_settings") or {}
    check = lambda ok, why: "ok" if ok else f"FAIL: {why}"  # noqa: E731
    out = {"item6": check(settings.get("metric_validate_args") is False, "metrics validate their arguments"),
           "item12": check(m.get("first_epoch_s") is not None and m.get("steady_throughput_img_s") is not None,
                           "no first-epoch / steady-state figures")}
    if gpu:
        cudnn = (world.get("device_settings") or {}).get("cudnn_benchmark")
        out["item7"] = check(c.get("cudnn_benchmark") is True and cudnn is True, f"cudnn.benchmark={cudnn}")
    if c.get("case") == "ddp":
        network = (world.get("communication") or {}).get("network")
        out["item4"] = check(network is not None or not gpu, "NCCL transport not read back")
    if c.get("case") == "dp":
        seen = settings.get("dp_replica_autocast") or {}
        want = "bfloat16" if c.get("precision") == "bf16-mixed" else None
        out["item1"] = check(seen.get("dtype") == want, f"replicas ran {seen}")
    return out


def versions(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The software and GPU that really ran, from the first result's ``environment``."""
    env = next((r.get("environment") for r in results if r and r.get("environment")), {}) or {}
    keep = ("python", "torch", "torch_cuda", "lightning", "torchvision", "torchmetrics", "driver", "cudnn", "nccl",
            "gpus", "cpu_model", "git_commit")
    return {"python_here": platform.python_version(), **{k: env[k] for k in keep if k in env}}


def run_plan(plan: dict[str, list[str]], timeout_s: int) -> tuple[list[dict], list[dict]]:
    """Run each command in turn; return (rows, results). A case that fails does not stop the others."""
    rows, results = [], []
    for name, cmd in plan.items():
        began = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            out = proc.stdout
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        paths = [ln.split("result: ", 1)[1] for ln in out.splitlines() if ln.startswith("result: ")]
        result = json.loads(Path(paths[-1]).read_text()) if paths else None
        results.append(result)
        rows.append(row(name, result, time.monotonic() - began))
        checks = correctness(name, result, gpu=_accelerator(result) == "gpu")
        rows[-1]["gpu_fixes"] = " ".join(f"{k}:{v}" for k, v in checks.items()) or "-"
        print(f"{name}: {rows[-1]['status']} in {rows[-1]['wall_s']} s", flush=True)
    return rows, results


class _SuiteOptions:
    """The suite's pytest options as a user leaves them: full preset, no --bench-devices/--bench-nodes."""

    def getoption(self, name: str):
        return {"--bench-arg": [], "--bench-preset": "full"}.get(name)


def suite_ddp_devices() -> str:
    """Issue 16 item 3: the suite's ddp default on this machine, "ok: N ..." when it is every visible
    GPU, else "FAIL: ..." (or "n/a" where the suite cannot be imported, e.g. no pytest)."""
    try:
        import torch

        from suite.test_cases import _devices_and_nodes_sourced
    except ImportError as err:
        return f"n/a ({err})"
    devices, nodes, source = _devices_and_nodes_sourced(_SuiteOptions())
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    ok = devices == max(1, visible) and nodes == 1 and source == "visible GPUs"
    return f"{'ok' if ok else 'FAIL'}: ddp on {devices} device(s) x {nodes} node(s) from {source}; {visible} visible"


def _accelerator(result: dict[str, Any] | None) -> str | None:
    return ((result or {}).get("config") or {}).get("accelerator")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.selfcheck.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("BENCH_DATA", ".gpu-check/cifar10-jpeg.tar.gz"))
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    ap.add_argument("--epochs", type=int, default=2, help="epochs per case on the full preset (default 2)")
    ap.add_argument("--cpu", action="store_true", help="run the plan on the CPU, smoke-sized (tests)")
    ap.add_argument("--only", help="comma-separated case names (default: all)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and the plan's JSON, run nothing")
    ap.add_argument("--timeout", type=int, default=240, help="seconds per case (default 240)")
    args = ap.parse_args(argv)
    from bench.results.resultfile import write_json_atomic
    from tabulate import tabulate

    plan = commands(args.data, args.out, args.cpu, args.epochs, args.only.split(",") if args.only else None)
    if args.dry_run:
        for name, cmd in plan.items():
            print(f"{name}: {' '.join(cmd)}")
        return ExitCode.OK
    rows, results = run_plan(plan, args.timeout)
    item3 = "n/a (CPU mode)" if args.cpu else suite_ddp_devices()
    report = {"mode": "cpu" if args.cpu else "gpu", "epochs": args.epochs, "versions": versions(results),
              "rows": rows, "commands": plan, "item3_suite_ddp_devices": item3}
    path = write_json_atomic(report, args.out / "gpu_check.json")
    print(tabulate([{k: v for k, v in r.items() if k != "reason"} for r in rows], headers="keys", floatfmt=".2f"))
    print(json.dumps(report["versions"]))
    print(f"gpu-check: {path}")
    fixes_ok = not any("FAIL" in r.get("gpu_fixes", "") for r in rows) and not item3.startswith("FAIL")
    print(f"gpu-check: item3 (suite's ddp devices): {item3}")
    print("gpu-check: issue 16's GPU-path fixes (items 1, 3, 4, 6, 7, 12) " + ("hold" if fixes_ok else "FAIL: see gpu_fixes"))
    return ExitCode.OK if fixes_ok and all(r["status"] in ("ok", "skipped") for r in rows) else ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
