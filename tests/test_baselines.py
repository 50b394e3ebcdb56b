"""Unit tests of bench.baselines: statistics, recording, the file format and atomic writes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from bench.baselines import (SCHEMA, WORK_FIELDS, devices_used, load_baseline, record_baseline,
                             summary_stats, validate_baseline, write_baseline)

REPO = Path(__file__).resolve().parents[1]

CONFIG = {"case": "baseline", "preset": "full", "model": "resnet18", "data": "/data/cifar10",
          "data_kind": "official", "epochs": 20, "global_batch_size": 256, "train_samples": 0,
          "test_samples": 0, "precision": "32-true", "num_workers": 4, "pin_memory": True,
          "persistent_workers": True, "accelerator": "gpu", "devices": 1, "num_nodes": 1}
ENV = {"gpu_names": ["NVIDIA H200"] * 4, "gpu_count": 4, "cpu_model": "Xeon 8480", "cpu_count": 16}


def result(case: str, samples: list[float], status: str = "ok", devices: int = 1, nodes: int = 1,
           ended: str = "2025-01-01T00:00:00Z", **config: object) -> dict:
    world_size = devices * nodes if case == "ddp" else 1
    return {"schema": "cifar-bench/result", "schema_version": 1, "run_id": f"{case}-{ended}",
            "case": case, "status": status, "reason": None,
            "config": {**CONFIG, "case": case, "devices": devices, "num_nodes": nodes, **config},
            "metrics": {"fit_s": samples[0], "fit_s_samples": samples, "throughput_img_s": 400.0,
                        "test_accuracy": 0.7},
            "world": {"world_size": world_size, "num_nodes": nodes, "devices_per_node": devices,
                      "hostnames": [f"node{i}" for i in range(nodes)]},
            "environment": ENV, "ended_utc": ended}


def test_summary_stats_values():
    s = summary_stats([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["mean"] == 2.5 and s["median"] == 2.5
    assert s["stdev"] == pytest.approx(1.2909944, rel=1e-6)
    assert s["cv"] == pytest.approx(0.5163978, rel=1e-6)


def test_summary_stats_single_sample_has_no_stdev():
    assert summary_stats([120.0]) == {"n": 1, "mean": 120.0, "median": 120.0, "stdev": None, "cv": None}


@pytest.mark.parametrize("bad", [[], [float("nan")], [-1.0], [0.0], [1.0, float("inf")]])
def test_summary_stats_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        summary_stats(bad)


def test_devices_used_per_case():
    assert devices_used(result("baseline", [1.0])) == 1
    assert devices_used(result("dp", [1.0], devices=2)) == 2
    assert devices_used(result("ddp", [1.0], devices=2, nodes=2)) == 4


def test_record_baseline_groups_pools_and_skips_failed():
    runs = [result("baseline", [100.0, 102.0], ended="2025-01-01T00:00:00Z"),
            result("baseline", [101.0], ended="2025-01-03T00:00:00Z"),
            result("ddp", [30.0, 31.0, 32.0], devices=2, nodes=2),
            result("dp", [99.0], status="failed")]
    base = record_baseline(runs, name="h200", source="runs on node0")
    assert base["schema"] == SCHEMA and base["schema_version"] == 1 and base["name"] == "h200"
    assert set(base["cases"]) == {"baseline", "ddp"}
    b = base["cases"]["baseline"]
    assert b["fit_s_samples"] == [100.0, 102.0, 101.0]
    assert b["fit_s_median"] == 101.0 and b["fit_s_mean"] == 101.0 and b["fit_s_stdev"] == 1.0
    assert b["devices"] == 1 and b["nodes"] == 1 and b["test_accuracy"] == 0.7
    d = base["cases"]["ddp"]
    assert d["devices"] == 4 and d["nodes"] == 2 and d["config"]["case"] == "ddp"
    assert base["recorded_utc"] == "2025-01-03T00:00:00Z"
    assert base["system"]["gpu_model"] == "NVIDIA H200" and base["system"]["nodes"] == 2


def test_record_baseline_needs_an_ok_result():
    with pytest.raises(ValueError, match="no result with status ok"):
        record_baseline([result("dp", [1.0], status="skipped")], name="x", source="y")


def test_record_baseline_refuses_mixed_work_in_one_case():
    with pytest.raises(ValueError, match="epochs"):
        record_baseline([result("baseline", [1.0]), result("baseline", [1.0], epochs=3)], "x", "y")


def test_write_then_load_by_name_and_path(tmp_path):
    base = record_baseline([result("baseline", [100.0])], name="mine", source="test")
    written = write_baseline(base, tmp_path / "mine.json")
    assert load_baseline("mine", tmp_path) == base
    assert load_baseline(str(written), tmp_path / "elsewhere") == base
    assert sorted(os.listdir(tmp_path)) == ["mine.json"]  # no temp file left behind


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "b.json"
    old = record_baseline([result("baseline", [100.0])], name="b", source="old")
    write_baseline(old, path)
    new = record_baseline([result("baseline", [50.0])], name="b", source="new")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_baseline(new, path)
    assert sorted(os.listdir(tmp_path)) == ["b.json"]
    assert json.loads(path.read_text())["source"] == "old"


def test_write_refuses_nan_and_leaves_no_temp(tmp_path):
    base = record_baseline([result("baseline", [100.0])], name="b", source="x")
    base["cases"]["baseline"]["throughput_img_s"] = float("nan")
    with pytest.raises(ValueError):
        write_baseline(base, tmp_path / "b.json")
    assert os.listdir(tmp_path) == []


def test_write_refuses_invalid_baseline(tmp_path):
    with pytest.raises(ValueError, match="not a baseline"):
        write_baseline({"cases": {}}, tmp_path / "b.json")


def test_load_unknown_name_lists_available(tmp_path):
    write_baseline(record_baseline([result("baseline", [1.0])], "one", "x"), tmp_path / "one.json")
    with pytest.raises(ValueError, match=r"not found.*available in .*: one"):
        load_baseline("two", tmp_path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"schema": "cifar-bench/result", "schema_version": 1}), "not a baseline file"),
    (json.dumps({"schema": SCHEMA, "schema_version": 2, "cases": {}}), "schema_version 2 is not supported"),
    (json.dumps({"schema": SCHEMA, "schema_version": 1, "cases": {}}), "has no cases"),
    (json.dumps({"schema": SCHEMA, "schema_version": 1, "cases": {"dp": {"fit_s_samples": []}}}),
     "no fit_s_samples"),
])
def test_load_bad_files(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_baseline("bad", tmp_path)


def test_reference_file_is_stored_honestly():
    ref = load_baseline("a100-2node", REPO / "baselines")
    assert validate_baseline(ref) is ref
    assert "single run each" in ref["source"]
    expected = {"baseline": (120.0, 1, 1), "dp": (141.0, 2, 1), "ddp": (65.0, 4, 2)}
    for case, (fit_s, devices, nodes) in expected.items():
        entry = ref["cases"][case]
        assert entry["fit_s_samples"] == [fit_s] and entry["fit_s_median"] == fit_s
        assert entry["fit_s_stdev"] is None
        assert (entry["devices"], entry["nodes"]) == (devices, nodes)
        assert entry["config"] is None and entry["environment"] is None


def test_work_fields_cover_the_brief():
    assert set(WORK_FIELDS) == {"model", "epochs", "global_batch_size", "data_kind", "train_samples",
                                "test_samples", "preset", "precision", "num_workers", "pin_memory",
                                "persistent_workers", "data_path", "tf32", "channels_last", "cudnn_benchmark", "sync_batchnorm"}
    assert not math.isnan(summary_stats([1.0, 1.0])["cv"])
