"""Networks, the DataParallel wrapper on CPU, the loss normalisation, and config validation."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from bench.core.config import ConfigError, make_config
from bench.run import dataparallel, ranks, training
from bench.run.model import CifarModule, build_network, count_parameters


def test_simple_cnn_has_the_classic_62k_parameters():
    net = build_network("simple_cnn")
    assert count_parameters(net) == 62_006
    assert net(torch.zeros(4, 3, 32, 32)).shape == (4, 10)


def test_resnet18_is_the_cifar_variant():
    net = build_network("resnet18")
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 32, 32))
    gmac = counter.get_total_flops() / 2 / 1e9
    assert 0.54 < gmac < 0.57  # ~0.56 GMAC per image
    assert 11.1e6 < count_parameters(net) < 11.2e6


def test_unknown_model_is_an_error():
    with pytest.raises(ValueError, match="resnet18"):
        build_network("vgg")


def test_data_parallel_wrapper_on_cpu_computes_the_same():
    config = make_config("smoke", data="synthetic")
    plain = training.build_module(config)
    wrapped = dataparallel.wrap_data_parallel(copy.deepcopy(plain), [])
    assert isinstance(wrapped.net, torch.nn.DataParallel)
    x = torch.randn(8, 3, 32, 32)
    assert torch.equal(plain(x), wrapped(x))
    for module in (plain, wrapped):
        module.step_loss((x, torch.arange(8) % 10), 0).backward()
    assert torch.equal(plain.net.features[0].weight.grad, dataparallel.bare_network(wrapped).features[0].weight.grad)
    assert training.trained_parameters(wrapped) == 62_006


class _AutomaticModule(CifarModule):
    """The product's module under Lightning's automatic optimization: the step's loss handed to Lightning."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.automatic_optimization = True

    def training_step(self, batch, batch_idx):
        return self.step_loss(batch, batch_idx)


def test_manual_optimization_trains_exactly_as_lightnings_automatic_loop():
    """The product's training_step (zero_grad, manual_backward, step) gives bit-identical weights and
    the same optimizer steps as Lightning's automatic loop (closure: forward, zero_grad, backward)."""
    config = make_config("smoke", data="synthetic")
    torch.manual_seed(0)
    data = TensorDataset(torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (96,)))
    results = []
    for cls in (CifarModule, _AutomaticModule):
        torch.manual_seed(1)
        module = cls(config)
        initial = ranks.parameter_digest(module)
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, DataLoader(data, batch_size=32))
        assert ranks.parameter_digest(module) != initial
        results.append((ranks.parameter_digest(module), trainer.global_step, module.train_accuracies))
    assert results[0] == results[1]
    assert results[0][1] == 6


def test_seeded_modules_start_identical():
    config = make_config("smoke", data="synthetic")
    a, b = training.build_module(config), training.build_module(config)
    assert ranks.parameter_digest(a) == ranks.parameter_digest(b)


def test_loss_scale_gives_global_mean_across_uneven_ranks():
    """Each rank's step_loss, averaged over the ranks as DDP averages gradients, is the
    mean over the global batch, also when the last global batch splits unevenly (4, 3, 3)."""
    torch.manual_seed(0)
    module = CifarModule(make_config("smoke", data="synthetic"))
    world, shares = 3, [(0, 4), (4, 7), (7, 10)]
    # what Lightning and the datamodule give the module during fit: world size, global batch sizes
    module._trainer = SimpleNamespace(world_size=world, datamodule=SimpleNamespace(global_batch_sizes=[64, 10]),
                                      global_step=0, log_every_n_steps=50, loggers=[])
    images, labels = torch.randn(10, 3, 32, 32), torch.randint(0, 10, (10,))
    with torch.no_grad():
        global_mean = torch.nn.functional.cross_entropy(module(images), labels)
        per_rank = [module.step_loss((images[a:b], labels[a:b]), 1) for a, b in shares]
    assert torch.allclose(sum(per_rank) / world, global_mean)


@pytest.mark.parametrize("overrides, message", [
    (dict(case="baseline", devices=2), "exactly one device"),
    (dict(case="ddp", devices=3, global_batch_size=64), "not divisible by the 3"),
    (dict(case="dp", accelerator="gpu", num_nodes=2, devices=2), "cannot span nodes"),
    (dict(model="vgg"), "--model 'vgg' is not one of"),
    (dict(global_batch_size=0), "--global-batch-size must be >= 1"),
    (dict(persistent_workers=True, num_workers=0), "--persistent-workers needs"),
    (dict(train_samples=-5), "--train-samples must be >= 0, got -5"),
    (dict(accuracy_floor=48.0), "fraction"),
    (dict(data_path="dali"), "--data-path 'dali' is not one of pil, uint8, device"),
    (dict(data_path="device", num_workers=2), "needs no loader workers; use --num-workers 0 or -1"),
    (dict(data_path="device", persistent_workers=True), "drop --pin-memory and --persistent-workers"),
    (dict(data_path="device", pin_memory=True), "drop --pin-memory and --persistent-workers"),
    (dict(profile=True, train_samples=64, global_batch_size=64), "at least 2 training steps"),
    (dict(profile=True, epochs=0), "use --epochs >= 1"),
    (dict(pg_timeout_s=float("inf")), "--pg-timeout-s must be > 0 and <= 604800 seconds"),  # not torch's OverflowError
    (dict(pg_timeout_s=1e300), "--pg-timeout-s must be > 0 and <= 604800 seconds"),
    (dict(lr=float("inf")), "--lr must be a finite number > 0, got inf"),  # not a run that diverges
    (dict(lr=0.0), "--lr must be a finite number > 0, got 0.0"),
    (dict(momentum=1.0), "--momentum must be >= 0 and < 1, got 1.0"),
    (dict(weight_decay=-1.0), "--weight-decay must be a finite number >= 0, got -1.0"),
    (dict(profile_warmup=0), "--profile-warmup >= 1 .* got 5, 0 and 3"),
    (dict(data_checksums="bogus"), "--data-checksums 'bogus': give official, skip, or a JSON file"),
    (dict(init_weights="/nonexistent/w.pt"), "--init-weights /nonexistent/w.pt: no such file"),
    (dict(accelerator="cpu", precision="16-mixed"), "--precision 16-mixed needs a GPU"),
])
def test_invalid_configs_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config("smoke", data="synthetic", **overrides)


def test_device_path_drops_the_presets_loader_settings():
    full = make_config("full", data="synthetic")
    assert full.pin_memory and full.persistent_workers  # the preset's, for the loader paths
    device = make_config("full", data="synthetic", data_path="device")
    assert not device.pin_memory and not device.persistent_workers


def test_config_is_frozen_and_records_batch_sizes():
    config = make_config("cpu", data="synthetic", case="ddp", devices=2, num_nodes=2, global_batch_size=256)
    assert config.world_size == 4 and config.per_device_batch_size == 64
    with pytest.raises(AttributeError):
        config.epochs = 3  # type: ignore[misc]
    assert config.to_dict()["global_batch_size"] == 256


def test_data_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BENCH_DATA", "/some/where")
    assert make_config("smoke").data == "/some/where"
    monkeypatch.delenv("BENCH_DATA")
    with pytest.raises(ConfigError, match="BENCH_DATA"):
        make_config("smoke")


def test_gpu_request_without_gpu_is_an_error(monkeypatch):
    from bench.measure.environment import GPUUnavailableError, check_gpu_usable

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GPUUnavailableError, match="--accelerator cpu"):
        check_gpu_usable(1)


def test_module_without_trainer_uses_plain_mean():
    module = CifarModule(make_config("smoke", data="synthetic"))
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    expected = torch.nn.functional.cross_entropy(module(x), y)
    assert torch.allclose(module.step_loss((x, y), 0), expected)


def test_channels_last_network_and_batches():
    module = CifarModule(make_config("smoke", data="synthetic", channels_last=True))
    conv = module.net.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    images, _ = module.on_after_batch_transfer((torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2)), 0)
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=torch.channels_last)
    plain = CifarModule(make_config("smoke", data="synthetic")).net.features[0].weight
    assert plain.is_contiguous() and not plain.is_contiguous(memory_format=torch.channels_last)
    resnet = CifarModule(make_config("smoke", data="synthetic", model="resnet18", channels_last=True))
    assert resnet.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_float_batches_are_not_normalised_twice():
    module = CifarModule(make_config("smoke", data="synthetic"))
    batch = torch.full((2, 3, 32, 32), 0.5)
    images, _ = module.on_after_batch_transfer((batch, torch.zeros(2)), 0)
    assert torch.equal(images, batch)


@pytest.fixture
def torch_tf32_restored():
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32 = saved[1]


@pytest.mark.parametrize("tf32, precision", [(True, "high"), (False, "highest")])
def test_device_settings_are_applied_and_read_back(tf32, precision, torch_tf32_restored):
    from bench.run.model import apply_device_settings

    settings = apply_device_settings(make_config("smoke", data="synthetic", tf32=tf32))
    assert settings == {"matmul_allow_tf32": tf32, "cudnn_allow_tf32": tf32, "float32_matmul_precision": precision,
                        "cudnn_benchmark": torch.backends.cudnn.benchmark}
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.get_float32_matmul_precision() == precision


def test_cli_flags_reach_the_config():
    from bench.cli import parser
    from bench.run.command import run_config

    def config(*flags):
        return run_config(parser().parse_args(["run", "--data", "synthetic", *flags]))

    c = config("--data-path", "pil", "--no-tf32", "--channels-last", "--num-workers", "1", "--persistent-workers")
    assert (c.data_path, c.tf32, c.channels_last, c.persistent_workers) == ("pil", False, True, True)
    d = config()
    assert (d.data_path, d.tf32, d.channels_last, d.pin_memory) == ("uint8", True, False, False)
    assert config("--preset", "full", "--accelerator", "cpu").pin_memory is False  # no page-locking on CPU
    assert config("--preset", "full", "--accelerator", "cpu", "--pin-memory").pin_memory is True
    assert config("--preset", "full", "--no-persistent-workers").persistent_workers is False


def test_compile_is_opt_in_in_place_and_a_work_field():
    """--compile compiles the network in place (same parameter names, same outputs) and makes runs
    that differ in it not comparable."""
    from bench.results.baselines import work_differences

    plain = training.build_module(make_config("smoke", data="synthetic"))
    compiled = training.build_module(make_config("smoke", data="synthetic", compile=True))
    assert make_config("smoke", data="synthetic").compile is False
    assert list(plain.net.state_dict()) == list(compiled.net.state_dict())
    assert compiled.net._compiled_call_impl is not None and plain.net._compiled_call_impl is None
    a, b = (make_config("smoke", data="synthetic", compile=c).to_dict() for c in (False, True))
    assert work_differences(a, b) == ["compile"]


@pytest.mark.parametrize("field", ["train_samples", "test_samples"])
def test_a_class_balanced_subset_needs_one_image_per_class(field):
    with pytest.raises(ConfigError, match=f"--{field.replace('_', '-')} must be 0 \\(all\\) or >= 10"):
        make_config("smoke", data="synthetic", **{field: 5})
    assert getattr(make_config("smoke", data="synthetic", **{field: 10}), field) == 10


@pytest.mark.parametrize("content", [b"not a checkpoint", b"", "list"])
def test_init_weights_that_are_no_state_dict_are_bad_input(tmp_path, content):
    from bench.run.training import build_module

    path = tmp_path / "w.pt"
    if content == "list":
        torch.save([1, 2, 3], path)  # a valid torch file, but no state_dict
    else:
        path.write_bytes(content)
    config = make_config("smoke", data="synthetic", init_weights=str(path))
    with pytest.raises(ConfigError, match="cannot load --init-weights .*written by --save-weights"):
        build_module(config)
