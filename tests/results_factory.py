"""One factory of result dicts and baselines for the analysis tests (compare, baselines, report, records).

Literal figures only: each test says what it puts in and what must come out.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.results.baselines import record_baseline
from bench.results.records import from_result

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
REFERENCE = REPO / "baselines" / "a100-2node.json"

CONFIG = {"preset": "full", "model": "resnet18", "data": "/data/cifar10", "data_kind": "official",
          "epochs": 20, "global_batch_size": 256, "train_samples": 0, "test_samples": 0,
          "precision": "32-true", "num_workers": 4, "pin_memory": True, "persistent_workers": True,
          "accelerator": "gpu", "data_path": "uint8", "tf32": True, "channels_last": False}
H200 = {"gpu_names": ["NVIDIA H200"] * 4, "gpu_count": 4, "cpu_model": "Xeon 8480", "cpu_count": 16,
        "torch": "2.14.1+cu130", "lightning": "2.6.6", "python": "3.11.7", "cuda_driver": "580.1"}
A100 = {"gpu_names": ["NVIDIA A100-SXM4-40GB"] * 4, "gpu_count": 4, "cpu_model": "EPYC 7742", "cpu_count": 64}
CPU = {"gpu_names": [], "gpu_count": 0, "cpu_model": "AMD EPYC", "cpu_count": 2, "torch": "2.14.1+cu130",
       "lightning": "2.6.6", "python": "3.11.7", "cuda_driver": None, "container_image": None,
       "container_runtime": None, "git_commit": "0123456789abcdef0123", "git_dirty": True}
SANE = {"loss_finite": True, "accuracy_floor": 0.0, "accuracy_ok": True, "passed": True}

_counter = iter(range(10**6))


def result(case: str, samples: list[float], status: str = "ok", devices: int = 1, nodes: int = 1,
           env: dict | None = None, reason: str | None = None, run_id: str | None = None,
           sanity: dict | None = None, profiled: bool = False, knobs: dict | None = None, **config: object) -> dict:
    """A per-run result dict; several ``samples`` stand for repeats (``metrics.fit_s_samples``)."""
    ok = status == "ok"
    return {"schema": "cifar-bench/result", "schema_version": 1,
            "run_id": run_id or f"{case}-{next(_counter)}", "case": case, "status": status, "reason": reason,
            "profiled": profiled, "test_knobs": knobs or {},
            "config": {**CONFIG, "case": case, "devices": devices, "num_nodes": nodes, **config},
            "metrics": ({"fit_s": samples[0], "fit_s_samples": samples, "throughput_img_s": 50000 / samples[0],
                         "test_accuracy": 0.5} if ok else {}),
            "sanity": (SANE if sanity is None else sanity) if ok else {},
            "world": {"world_size": devices * nodes if case == "ddp" else 1, "num_nodes": nodes,
                      "devices_per_node": devices, "hostnames": ["node1"] * (devices * nodes)},
            "environment": H200 if env is None else env, "ended_utc": "2026-01-01T00:00:00+00:00"}


def records(*results: dict) -> list:
    """The records of in-memory results (as :func:`bench.results.reading.read_records` gives them)."""
    return [rec for r in results for rec in from_result(r, "(test)")]


def baseline_of(*results: dict, name: str = "test") -> dict:
    """A baseline dict recorded from these results (the valid ones)."""
    return record_baseline(records(*results), name=name, source="unit test")[0]


def write(folder: Path, *results: dict) -> list[Path]:
    """Write each result as ``<run_id>.json`` into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        path = folder / f"{r['run_id']}.json"
        path.write_text(json.dumps(r))
        paths.append(path)
    return paths
