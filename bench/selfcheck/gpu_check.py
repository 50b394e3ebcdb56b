"""The prepared GPU check: the product's configurations on one GPU, one table, one JSON, <= 5 minutes.

    make gpu-check                                   # copies the data archive into .gpu-check/, then runs:
    PYTHONPATH=$PWD python3 -m bench.selfcheck.gpu_check --data .gpu-check/cifar10-jpeg.tar.gz --out runs/gpu-check
    PYTHONPATH=$PWD python3 -m bench.selfcheck.gpu_check --dry-run        # print the plan and its estimate, run nothing
    PYTHONPATH=$PWD python3 -m bench.selfcheck.gpu_check --cpu --data synthetic --only baseline-uint8   # CPU mode (tests)

It runs from the source tree (``PYTHONPATH``) in whatever Python environment has torch and
Lightning, e.g. a lent GPU machine's own (Python 3.12, its own torch, no network), and records the
versions that really ran (each result's ``environment``, read with the keys the results use). The plan
(:mod:`bench.selfcheck.gpu_plan`: cases, time estimate, accuracy floor, what one GPU cannot show) runs
each case as ``python -m bench run`` on the ``full`` preset for 2 epochs, plus the sync probe
(:mod:`bench.selfcheck.syncprobe`: host synchronisations per step under ``torch.cuda.set_sync_debug_mode``).
``--cpu`` runs the same plan on the CPU (gloo, 32-bit where bf16 would only slow it), smoke-sized.

Each row's ``status`` is the run's true status: ``ok`` only when the run exited 0, wrote an ``ok`` result
and passed its sanity check; else ``sanity-failed``, ``failed (exit N)``, ``timeout``, ``no result``. Its
``checks`` say which GPU-path fixes the case showed to hold (:func:`correctness`). Exit status: 0 when every
row is ok and every check held; 1 otherwise (the table and JSON still show every row).
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
from bench.selfcheck.gpu_plan import (ACCURACY_FLOOR, BUDGET_S, EPOCHS, IMAGE_NOTE, NOT_ON_ONE_GPU, PLAN, SYNC_PROBE,
                                      plan_estimate)
from bench.selfcheck.gpu_preflight import PRIVATE_IMPORTS, missing_packages, private_imports  # noqa: F401

_CPU_DROP = {"--precision", "bf16-mixed"}  # bf16 on CPU only slows the CPU mode down; the rest runs as planned


def commands(data: str, out: Path, cpu: bool, epochs: int, only: list[str] | None = None) -> dict[str, list[str]]:
    """The command of each planned case: ``python -m bench run ...`` and the sync probe (pure)."""
    base = ["--preset", "smoke", "--train-samples", "640", "--test-samples", "200"] if cpu else \
        ["--preset", "full", "--epochs", str(epochs), "--accuracy-floor", str(ACCURACY_FLOOR)]
    plan = {}
    for name, extra in PLAN.items():
        if only and name not in only:
            continue
        extra = [a for a in extra if not (cpu and a in _CPU_DROP)]
        case = [] if "--case" in extra else ["--case", "baseline"]
        plan[name] = [sys.executable, "-m", "bench", "run", *case, *base, "--data", data,
                      "--out", str(out / "runs" / name), *extra]
    if not only or SYNC_PROBE in only:
        plan[SYNC_PROBE] = [sys.executable, "-m", "bench.selfcheck.syncprobe", "--out", str(out / "runs" / SYNC_PROBE),
                            *(["--cpu"] if cpu else [])]
    return plan


def true_status(result: dict[str, Any] | None, returncode: int | None) -> str:
    """The run's status as a user must read it (pure): returncode None = killed at the time limit."""
    if returncode is None:
        return "timeout"
    if result is None:
        return f"no result (exit {returncode})"
    status = result.get("status")
    if status == "ok" and "sanity" in result and not (result.get("sanity") or {}).get("passed"):
        return "sanity-failed"
    if returncode != 0:
        return f"failed (exit {returncode})" if status == "ok" else f"{status} (exit {returncode})"
    return status or "no status"


def row(name: str, result: dict[str, Any] | None, returncode: int | None, seconds: float) -> dict[str, Any]:
    """One table row from a run's result (None: the case left no result) and its exit status."""
    base = {"case": name, "status": true_status(result, returncode), "wall_s": round(seconds, 1)}
    if result is None:
        return base
    if name == SYNC_PROBE:
        train, test = result.get("train") or {}, result.get("test") or {}
        return {**base, "host_reads_per_step": _per(train.get("host_reads"), train.get("steps")),
                "cuda_syncs_per_step": _per(train.get("cuda_syncs"), train.get("steps")),
                "test_host_reads": test.get("host_reads"), "test_cuda_syncs": test.get("cuda_syncs"),
                "test_steps": test.get("steps")}
    m, c = result.get("metrics") or {}, result.get("config") or {}
    epochs = m.get("epoch_train_s") or []
    images = m.get("train_images_per_epoch") or 0
    bd = (((m.get("step_breakdown") or {}).get("per_rank") or [{}])[0].get("epochs") or [{}])[-1]
    return {**base, "model": c.get("model"), "precision": c.get("precision"), "data_path": c.get("data_path"),
            "fit_s": m.get("fit_s"), "img_s_last_epoch": images / epochs[-1] if epochs and images else None,
            "steady_img_s": m.get("steady_throughput_img_s"), "test_accuracy": m.get("test_accuracy"),
            "accuracy_floor": (result.get("sanity") or {}).get("accuracy_floor"),
            "step_ms": 1000 * bd["step_s"]["median"] if "step_s" in bd else None,
            "data_wait_ms": 1000 * bd["data_wait_s"]["median"] if "data_wait_s" in bd else None,
            "backend": (result.get("world") or {}).get("backend"), "reason": result.get("reason")}


def _per(count: int | None, steps: int | None) -> float | None:
    return None if count is None or not steps else count / steps


def correctness(name: str, result: dict[str, Any] | None, gpu: bool) -> dict[str, str]:
    """The GPU-path fixes this case can show, each "ok" or "FAIL: why" (pure; {} for a run that is not ok).

    issue 16 (first reading): item 4: the NCCL transport was read back (``world.communication.network``)
    on ddp; item 6: no argument validation in the accuracy metric; item 7: cuDNN's autotuner on for GPU
    runs, as recorded and as torch reports it; item 12: the first epoch and a steady-state throughput
    recorded apart. issue 31: item 3: the first step of each new batch size (the last, partial batch)
    kept out of the steady state; item 4 (sync probe): at most one host read or CUDA sync a test pass
    and none a training step (steps 12..17 log no loss).
    """
    if not result or result.get("status", "ok") != "ok":
        return {}
    check = lambda ok, why: "ok" if ok else f"FAIL: {why}"  # noqa: E731
    if name == SYNC_PROBE:
        train, test = result.get("train") or {}, result.get("test") or {}
        worst_test = max(test.get("host_reads") or 0, test.get("cuda_syncs") or 0)
        worst_train = max(train.get("host_reads") or 0, train.get("cuda_syncs") or 0)
        return {"31.item4": check(worst_test <= 1, f"{worst_test} host syncs in a test pass"),
                "31.train_syncs": check(worst_train == 0, f"{worst_train} host syncs in {train.get('steps')} steps")}
    world, m, c = result.get("world") or {}, result.get("metrics") or {}, result.get("config") or {}
    settings = world.get("training_settings") or {}
    out = {"16.item6": check(settings.get("metric_validate_args") is False, "metrics validate their arguments"),
           "16.item12": check(m.get("first_epoch_s") is not None and m.get("steady_throughput_img_s") is not None,
                              "no first-epoch / steady-state figures")}
    images, batch = m.get("train_images_per_epoch") or 0, c.get("global_batch_size") or 0
    steps = m.get("steps_per_epoch")
    if m.get("warmup_s") is not None and batch and steps:
        want = [[0, steps - 1]] if images % batch else []
        out["31.item3"] = check(m.get("new_shape_steps") == want, f"new-shape steps {m.get('new_shape_steps')}, "
                                                                   f"want {want}")
    if gpu:
        cudnn = (world.get("device_settings") or {}).get("cudnn_benchmark")
        out["16.item7"] = check(c.get("cudnn_benchmark") is True and cudnn is True, f"cudnn.benchmark={cudnn}")
    if c.get("case") == "ddp":
        network = (world.get("communication") or {}).get("network")
        out["16.item4"] = check(network is not None or not gpu, "NCCL transport not read back")
    return out


def versions(results: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The software and GPU that really ran, from the first result's ``environment``, with the keys
    :func:`bench.measure.environment.collect` writes (its :func:`~bench.measure.environment.gpu_facts`'
    keys read from that code, so a renamed key cannot be lost here)."""
    from bench.measure import environment

    env = next((r.get("environment") for r in results if r and r.get("environment")), {}) or {}
    keep = ("python", "torch", "lightning", "torchvision", "torchmetrics", *environment.gpu_facts(), "cpu_model",
            "git_commit", "git_dirty")
    return {"python_here": platform.python_version(), **{k: env.get(k) for k in keep}}


def run_plan(plan: dict[str, list[str]], timeout_s: dict[str, float]) -> tuple[list[dict], list[dict | None]]:
    """Run each command in turn; return (rows, results). A case that fails does not stop the others."""
    rows, results = [], []
    for name, cmd in plan.items():
        began, returncode = time.monotonic(), None
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s[name])
            out, returncode = proc.stdout, proc.returncode
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] if returncode else []
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            tail = [f"killed after {timeout_s[name]:.0f} s"]
        paths = [ln.split("result: ", 1)[1] for ln in out.splitlines() if ln.startswith("result: ")]
        result = json.loads(Path(paths[-1]).read_text()) if paths and Path(paths[-1]).is_file() else None
        results.append(result)
        rows.append(row(name, result, returncode, time.monotonic() - began))
        if tail and not rows[-1].get("reason"):
            rows[-1]["reason"] = tail[0][-300:]
        checks = correctness(name, result, gpu=_accelerator(result) == "gpu" or (name == SYNC_PROBE and result
                                                                                 and result.get("mode") == "gpu"))
        rows[-1]["checks"] = " ".join(f"{k}:{v}" for k, v in checks.items()) or "-"
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


def _print_plan(plan: dict[str, list[str]], estimate: dict[str, float], cpu: bool) -> None:
    for name, cmd in plan.items():
        print(f"{name} (~{estimate[name]:.0f} s): {' '.join(cmd)}")
    total = sum(estimate.values())
    print(f"gpu-check: plan {len(plan)} cases, ~{total:.0f} s on one H100-class GPU (budget {BUDGET_S:.0f} s)"
          + (" [CPU mode: smoke-sized, the estimate is the GPU plan's]" if cpu else ""))
    for item, proof in NOT_ON_ONE_GPU.items():
        print(f"gpu-check: not exercisable on one GPU: {item}: proof on CPU: {proof}")
    print(f"gpu-check: {IMAGE_NOTE}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.selfcheck.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("BENCH_DATA", ".gpu-check/cifar10-jpeg.tar.gz"))
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    ap.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per case on the full preset (default {EPOCHS})")
    ap.add_argument("--cpu", action="store_true", help="run the plan on the CPU, smoke-sized (tests)")
    ap.add_argument("--only", help="comma-separated case names (default: all)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan with its time estimate, run nothing")
    args = ap.parse_args(argv)
    only = args.only.split(",") if args.only else None
    if unknown := sorted(set(only or ()) - {*PLAN, SYNC_PROBE}):  # a typo must not pass with nothing run
        ap.error(f"--only: no case named {', '.join(unknown)}; the cases are {', '.join([*PLAN, SYNC_PROBE])}")
    plan = commands(args.data, args.out, args.cpu, args.epochs, only)
    estimate = plan_estimate(list(plan), epochs=args.epochs)
    _print_plan(plan, estimate, args.cpu)
    if args.dry_run:
        return ExitCode.OK
    from bench.results.resultfile import write_json_atomic

    imports, missing_pkgs = private_imports(), missing_packages()
    for name, who in missing_pkgs.items():  # every bench run would fail: say why first
        print(f"gpu-check: MISSING package {name} (needed by {who}): the runs below cannot start without it")
    # a case may take 3x its estimate before it is cut (the CPU mode: 10 minutes, a busy machine's)
    rows, results = run_plan(plan, {n: 600.0 if args.cpu else max(60.0, 3 * s) for n, s in estimate.items()})
    item3 = "n/a (CPU mode)" if args.cpu else suite_ddp_devices()
    report = {"mode": "cpu" if args.cpu else "gpu", "epochs": args.epochs, "accuracy_floor": ACCURACY_FLOOR,
              "versions": versions(results), "private_imports": imports, "missing_packages": missing_pkgs,
              "rows": rows, "commands": plan,
              "estimate_s": estimate, "item3_suite_ddp_devices": item3, "not_exercisable_on_one_gpu": NOT_ON_ONE_GPU,
              "image_note": IMAGE_NOTE}
    path = write_json_atomic(report, args.out / "gpu_check.json")
    try:
        from tabulate import tabulate

        print(tabulate([{k: v for k, v in r.items() if k != "reason"} for r in rows], headers="keys", floatfmt=".3g"))
    except ImportError:  # the JSON has it all; one line a row here
        print("\n".join(json.dumps(r) for r in rows))
    for r in rows:
        if r["status"] != "ok":
            print(f"gpu-check: {r['case']}: {r['status']}: {r.get('reason') or 'no reason recorded'}")
    print(json.dumps(report["versions"]))
    missing = [f"{k}: {v}" for k, v in imports.items() if v != "ok"]
    print("gpu-check: private torch/Lightning imports: " + ("all present" if not missing else "; ".join(missing)))
    fixes_ok = not missing_pkgs and not any("FAIL" in r.get("checks", "") for r in rows) and not item3.startswith("FAIL")
    runs_ok = all(r["status"] == "ok" for r in rows)
    print(f"gpu-check: item3 (suite's ddp devices): {item3}")
    print("gpu-check: GPU-path fixes " + ("hold" if fixes_ok else "FAIL: see checks") + "; runs "
          + ("all ok" if runs_ok else "NOT all ok: see status"))
    print(f"gpu-check: {IMAGE_NOTE}")
    print(f"gpu-check: {path}")
    return ExitCode.OK if fixes_ok and runs_ok else ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
