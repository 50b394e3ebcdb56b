"""GPU-only paths, checked on CPU where the mechanism reproduces there (issue 16).

Run:  .venv/bin/python -m pytest -q tests/test_gpu_paths.py

DataParallel's replica threads and autocast (CPU autocast in threads), NCCL's log file name on a
host with a dotted name, ddp's device count in the suite, dp on a present-but-unusable GPU (torch's
reason faked), metric argument validation, cudnn.benchmark, SyncBatchNorm, every node's GPUs, and
start-up apart from steady-state time. The GPU check script (performance issue) runs the rest.
"""

from __future__ import annotations

import os
import threading
import types

import pytest
import torch

from bench.core.config import ConfigError, make_config
from bench.measure import environment, timing
from bench.run import comm, dataparallel, training
from bench.run.model import apply_device_settings


def _in_replica_thread(module, x, device_type: str = "cpu"):
    """Call ``module(x)`` the way torch's parallel_apply runs a replica: in a new thread that
    re-enters autocast with the caller's enabled flag and *no dtype* (nn/parallel/parallel_apply.py)."""
    enabled, out = torch.is_autocast_enabled(device_type), {}

    def worker():
        with torch.no_grad(), torch.amp.autocast(device_type, enabled=enabled):
            out["y"] = module(x)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    return out["y"]


def test_replica_thread_without_the_wrapper_loses_the_autocast_dtype():
    """The defect itself, on CPU: a new thread's autocast takes the device default (bfloat16 on CPU,
    float16 on CUDA), not the caller's dtype."""
    net = torch.nn.Linear(4, 4)
    with torch.autocast("cpu", dtype=torch.float16):
        assert _in_replica_thread(net, torch.randn(2, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_replica_thread_with_the_wrapper_keeps_the_runs_dtype(dtype):
    replica = dataparallel.AutocastReplica(torch.nn.Linear(4, 4), "cpu", dtype)
    with torch.autocast("cpu", dtype=dtype):
        assert _in_replica_thread(replica, torch.randn(2, 4)).dtype == dtype
    assert replica.seen == {"enabled": True, "dtype": str(dtype).removeprefix("torch.")}
    assert _in_replica_thread(replica, torch.randn(2, 4)).dtype == torch.float32  # caller without autocast
    assert replica.seen == {"enabled": False, "dtype": None}


def test_dp_module_records_its_replicas_precision_and_unwraps():
    config = make_config("smoke", data="synthetic", precision="bf16-mixed")
    module = dataparallel.wrap_data_parallel(training.build_module(config), [], device_type="cpu")
    assert dataparallel.replica_autocast(module) == {}  # nothing ran yet
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _in_replica_thread(module, torch.randn(2, 3, 32, 32))
    settings = training.training_settings(module)
    assert settings["dp_replica_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert isinstance(dataparallel.bare_network(module), type(training.build_module(config).net))
    assert list(dataparallel.bare_network(module).state_dict()) == list(training.build_module(config).net.state_dict())


def test_accuracy_metrics_skip_argument_validation():
    module = training.build_module(make_config("smoke", data="synthetic"))
    assert module.test_accuracy.validate_args is False
    assert not hasattr(module, "train_accuracy")  # training accuracy is a per-step count on the device, no metric
    assert training.training_settings(module) == {"dp_replica_autocast": None, "metric_validate_args": False,
                                              "sync_batchnorm_layers": 0}


@pytest.fixture
def cudnn_benchmark_restored():
    saved = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = saved


def test_cudnn_benchmark_defaults_by_accelerator_and_is_applied(cudnn_benchmark_restored):
    assert make_config("smoke", data="synthetic").cudnn_benchmark is False
    assert make_config("full", data="synthetic").cudnn_benchmark is True  # GPU preset
    assert make_config("full", data="synthetic", cudnn_benchmark=False).cudnn_benchmark is False
    assert make_config("full", data="synthetic").to_dict()["cudnn_benchmark"] is True  # recorded resolved
    for wanted in (True, False):
        config = make_config("smoke", data="synthetic", cudnn_benchmark=wanted)
        assert apply_device_settings(config)["cudnn_benchmark"] is wanted
        trainer = training.build_trainer(config, "t", [])
        assert torch.backends.cudnn.benchmark is wanted, "the Trainer must keep the recorded value"
        del trainer


def test_cli_flags_for_cudnn_benchmark_and_sync_batchnorm():
    from bench.cli import parser
    from bench.run.command import run_config

    args = parser().parse_args(["run", "--data", "synthetic", "--case", "ddp", "--devices", "2",
                                "--no-cudnn-benchmark", "--sync-batchnorm", "--preset", "full"])
    config = run_config(args)
    assert (config.cudnn_benchmark, config.sync_batchnorm) == (False, True)


def test_sync_batchnorm_reaches_the_trainer_and_is_refused_for_dp(monkeypatch):
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    config = make_config("smoke", case="ddp", devices=2, data="synthetic", model="resnet18", sync_batchnorm=True,
                         accelerator="gpu")
    monkeypatch.setattr(training.L, "Trainer", lambda **options: options)  # no GPU here to build a real one
    options = training.build_trainer(config, "t", [])
    assert options["sync_batchnorm"] is True and options["benchmark"] is True
    module = training.build_module(config)
    module.net = TorchSyncBatchNorm().apply(module.net)  # what Lightning's DDPStrategy does with it
    assert training.training_settings(module)["sync_batchnorm_layers"] == 20  # ResNet-18's BatchNorm layers
    with pytest.raises(ConfigError, match="--sync-batchnorm needs ddp"):
        make_config("full", case="dp", devices=2, data="synthetic", sync_batchnorm=True)
    with pytest.raises(ConfigError, match="runs only on GPUs"):  # torch's SyncBatchNorm refuses CPU tensors
        make_config("smoke", case="ddp", devices=2, data="synthetic", sync_batchnorm=True)


def _nccl_debug_file(pattern: str, nccl_hostname: str, pid: int) -> str:
    """NCCL's expansion of NCCL_DEBUG_FILE (src/debug.cc): %h = host cut at the first dot, %p = pid."""
    return pattern.replace("%h", nccl_hostname.split(".")[0]).replace("%p", str(pid))


def test_nccl_log_is_found_on_a_host_with_a_dotted_name(tmp_path, monkeypatch):
    for key in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE", comm.LOG_MARKER):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(comm.socket, "gethostname", lambda: "gpu017.cluster.example.org")
    config = make_config("smoke", case="ddp", devices=2, data="synthetic", out_dir=str(tmp_path), accelerator="gpu")
    folder = comm.request_nccl_log(config, "r1")
    pattern = os.environ["NCCL_DEBUG_FILE"]
    assert "%h" not in pattern and "gpu017.cluster.example.org" in pattern
    written = _nccl_debug_file(pattern, "gpu017.cluster.example.org", os.getpid())  # where NCCL writes
    assert os.path.dirname(written) == str(folder)
    with open(written, "w") as f:
        f.write("gpu017:1:1 [0] NCCL INFO Using network IB\n")
    facts = comm.own_nccl_facts()
    assert facts is not None and facts["network"] == "IB" and facts["log"] == written


def _suite_config(preset: str, bench_args: list[str], devices=None):
    options = {"--bench-devices": devices, "--bench-nodes": None, "--bench-preset": preset,
               "--bench-arg": bench_args}
    return types.SimpleNamespace(getoption=options.__getitem__)


@pytest.mark.parametrize("preset, args, visible, expected", [
    ("smoke", [], 8, (2, 1, "2 CPU processes (default)")),
    ("full", [], 8, (8, 1, "visible GPUs")),
    ("full", [], 1, (1, 1, "visible GPUs")),
    ("full", [], 0, (1, 1, "visible GPUs")),  # fails in the run with torch's reason, not here
    ("smoke", ["--accelerator=gpu"], 4, (4, 1, "visible GPUs")),
    ("full", ["--accelerator", "cpu"], 4, (2, 1, "2 CPU processes (default)")),
])
def test_suite_ddp_devices_default_to_the_visible_gpus(monkeypatch, preset, args, visible, expected):
    from suite import test_cases

    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    assert test_cases._devices_and_nodes_sourced(_suite_config(preset, args)) == expected
    assert test_cases._devices_and_nodes_sourced(_suite_config(preset, args, devices=3))[:2] == (3, 1)


def _fake_cuda(monkeypatch, reason: str):
    def init():
        raise RuntimeError(reason)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "init", init)


OLD_DRIVER = ("The NVIDIA driver on your system is too old (found version 11040). Please update your GPU "
              "driver by downloading and installing a new version from the URL: http://www.nvidia.com/Download/index.aspx")


def test_dp_on_a_gpu_with_a_too_old_driver_fails_with_torchs_reason(monkeypatch, tmp_path, capsys):
    from bench.cli import main

    _fake_cuda(monkeypatch, OLD_DRIVER)
    config = make_config("full", case="dp", devices=2, data="synthetic", out_dir=str(tmp_path))
    with pytest.raises(environment.GPUUnavailableError, match="driver on your system is too old"):
        dataparallel.dp_skip_reason(config)
    assert main(["run", "--case", "dp", "--data", "synthetic", "--out", str(tmp_path)]) == 2
    assert "too old" in capsys.readouterr().err and not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("reason", ["Found no NVIDIA driver on your system. Please check ...",
                                    "No CUDA GPUs are available"])
def test_dp_without_any_gpu_is_still_skipped(monkeypatch, reason):
    _fake_cuda(monkeypatch, reason)
    config = make_config("full", case="dp", devices=2, data="synthetic")
    assert "needs 2 or more CUDA devices" in dataparallel.dp_skip_reason(config)


def test_gpu_check_names_torchs_reason_when_the_first_warning_was_spent(monkeypatch):
    _fake_cuda(monkeypatch, OLD_DRIVER)  # no warning now: torch warns once per process
    with pytest.raises(environment.GPUUnavailableError, match="too old"):
        environment.check_gpu_usable(1)


NODE_A = {"gpu_names": ["NVIDIA A100-SXM4-80GB"] * 2, "drivers": ["550.54.15"], "mig_modes": ["Disabled"] * 2}


def test_every_nodes_gpus_are_recorded_and_mixed_hardware_flagged():
    same = environment.node_hardware([{"hostname": "n1", "node_gpus": NODE_A}, {"hostname": "n1", "node_gpus": NODE_A},
                                      {"hostname": "n2", "node_gpus": NODE_A}])
    assert same == {"per_node": {"n1": NODE_A, "n2": NODE_A}, "mixed": False, "differs_in": []}
    node_b = {**NODE_A, "drivers": ["535.183.01"], "mig_modes": ["Enabled", "Disabled"]}
    mixed = environment.node_hardware([{"hostname": "n1", "node_gpus": NODE_A}, {"hostname": "n2", "node_gpus": node_b}])
    assert mixed["mixed"] and mixed["differs_in"] == ["drivers", "mig_modes"]
    one_node = {**NODE_A, "gpu_names": ["NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB"]}
    assert environment.node_hardware([{"hostname": "n1", "node_gpus": one_node}])["differs_in"] == ["gpu_names"]


def test_node_gpu_facts_without_nvidia_smi_are_empty(monkeypatch):
    monkeypatch.setattr(environment, "_run", lambda cmd: None)
    assert environment.node_gpu_facts() == {"gpu_names": [], "drivers": [], "mig_modes": []}
    line = "NVIDIA A100-SXM4-80GB, 550.54.15, Enabled"
    monkeypatch.setattr(environment, "_run", lambda cmd: f"{line}\n{line}")
    assert environment.node_gpu_facts() == {"gpu_names": ["NVIDIA A100-SXM4-80GB"] * 2, "drivers": ["550.54.15"],
                                           "mig_modes": ["Enabled"] * 2}


def test_steady_state_keeps_start_up_apart():
    # 3 epochs of 1000 images; the first 5 steps (5 x 100 images) took 2.0 s of the first epoch's 4.0 s
    figures = timing.steady_state([4.0, 2.0, 2.2], warmup_s=2.0, warmup_images=500, images_per_epoch=1000)
    assert figures["first_epoch_s"] == 4.0 and figures["steady_epoch_s"] == pytest.approx(2.1)
    assert figures["warmup_steps"] == timing.WARMUP_STEPS and figures["warmup_s"] == 2.0
    assert figures["steady_throughput_img_s"] == pytest.approx(2500 / 6.2)
    short = timing.steady_state([1.0], warmup_s=None, warmup_images=0, images_per_epoch=256)
    assert short == {"first_epoch_s": 1.0, "steady_epoch_s": None, "warmup_steps": None, "warmup_s": None,
                     "new_shape_s": None,
                     "steady_throughput_img_s": None}


def test_a_run_records_the_new_fields(tmp_path):
    """One short real run (synthetic data, 2 epochs of 8 steps): the hooks the GPU check script reads."""
    from bench.run.runner import run_case

    config = make_config("smoke", data="synthetic", train_samples=256, test_samples=64, epochs=2,
                         global_batch_size=32, out_dir=str(tmp_path), num_workers=0)
    result = run_case(config)
    m, world = result["metrics"], result["world"]
    assert m["first_epoch_s"] == m["epoch_train_s"][0] and m["steady_epoch_s"] == m["epoch_train_s"][1]
    assert m["warmup_steps"] == 5 and 0 < m["warmup_s"] < m["first_epoch_s"]
    assert m["steady_throughput_img_s"] > 0 and m["fit_s"] >= sum(m["epoch_train_s"])
    assert world["training_settings"] == {"dp_replica_autocast": None, "metric_validate_args": False,
                                          "sync_batchnorm_layers": 0}
    assert world["device_settings"]["cudnn_benchmark"] is False and result["config"]["cudnn_benchmark"] is False
    assert list(world["nodes"]["per_node"]) == world["hostnames"][:1] and world["nodes"]["mixed"] is False


def test_recorded_commit_is_that_of_the_code_that_ran(tmp_path, monkeypatch):
    """Inside an image (no git) the checkout slurm/suite.sh binds is imported: its commit, read on the
    host, is recorded, never the image's baked-in BENCH_GIT_COMMIT."""
    monkeypatch.setattr(environment, "_run", lambda cmd: None)  # no git here
    monkeypatch.setenv("BENCH_GIT_COMMIT", "image0commit")
    for key in ("BENCH_SOURCE_DIR", "BENCH_SOURCE_COMMIT", "BENCH_SOURCE_DIRTY"):
        monkeypatch.delenv(key, raising=False)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    assert environment.git_facts(checkout) == {"code_path": str(checkout), "git_commit": None, "git_dirty": None,
                                               "git_commit_source": None}
    monkeypatch.setenv("BENCH_SOURCE_DIR", str(checkout))
    monkeypatch.setenv("BENCH_SOURCE_COMMIT", "host0commit")
    monkeypatch.setenv("BENCH_SOURCE_DIRTY", "1")
    facts = environment.git_facts(checkout)
    assert (facts["git_commit"], facts["git_dirty"], facts["git_commit_source"]) == \
        ("host0commit", True, "slurm/suite.sh (host git)")
    installed = tmp_path / "lib" / "site-packages"
    installed.mkdir(parents=True)
    facts = environment.git_facts(installed)
    assert (facts["git_commit"], facts["git_commit_source"]) == ("image0commit", "image (BENCH_GIT_COMMIT)")


def test_recorded_commit_from_git_in_this_checkout():
    facts = environment.git_facts()
    assert facts["git_commit_source"] == "git" and len(facts["git_commit"]) == 40
    assert facts["code_path"] == str(environment.REPO_ROOT)


def test_suite_reports_dp_on_an_unusable_gpu_as_failed_not_skipped(tmp_path):
    """`pytest suite -k test_dp` with torch's CUDA faked to a driver too old (sitecustomize in every
    process): the dp case fails with torch's reason."""
    import subprocess
    import sys
    from pathlib import Path

    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import torch\n"
        "torch.cuda.is_available = lambda: False\n"
        "def _init():\n"
        f"    raise RuntimeError({OLD_DRIVER!r})\n"
        "torch.cuda.init = _init\n")
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(repo)])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "-rfs",
                           "-k", "test_dp", "--bench-preset", "smoke", "--bench-data", "synthetic",
                           "--bench-out", str(tmp_path / "runs")],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 failed" in proc.stdout and "skipped" not in proc.stdout.lower().split("short test summary")[-1]
    assert "driver on your system is too old" in proc.stdout
