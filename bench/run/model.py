"""The workload: CIFAR-10 networks and the LightningModule that trains and tests them.

Networks are chosen by name (:func:`build_network`). The module computes the cross-entropy
loss normalised by the *global* batch, so that every case (1 device, DataParallel, DDP with
any world size) takes the same optimizer step from the same global batch, also when the last
batch of an epoch is split unevenly over the ranks.

Limitation: this holds for networks without BatchNorm (``simple_cnn``). ``resnet18``'s BatchNorm
layers normalise each replica's (dp) or rank's (ddp) share of the batch with that share's own
statistics, so its steps differ between cases unless ``sync_batchnorm`` (ddp only: SyncBatchNorm,
recorded in the config) computes them over the global batch; dp cannot (docs/gpu-clusters.md).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
import torchvision
from torch import nn

from bench.core.config import BenchConfig
from bench.data.datamodule import normalize
from bench.data.datapaths import IndexBatch

NUM_CLASSES = 10


class SimpleCNN(nn.Module):
    """The classic small CIFAR-10 CNN: conv5x5(6) -> pool -> conv5x5(16) -> pool -> FC 120-84-10.

    62,006 parameters. Input (N, 3, 32, 32) float, output (N, 10) logits.
    Source: the PyTorch "Training a classifier" CIFAR-10 tutorial network.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def cifar_resnet18(num_classes: int = NUM_CLASSES) -> nn.Module:
    """torchvision's ResNet-18 adapted to 32x32 inputs: 3x3 stride-1 stem, no max-pool.

    About 11.2 M parameters and 0.56 GMAC per 32x32 image (the usual CIFAR ResNet-18,
    e.g. kuangliu/pytorch-cifar). Input (N, 3, 32, 32), output (N, num_classes).
    """
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def build_network(name: str) -> nn.Module:
    """Return a freshly initialised network by name ("simple_cnn" or "resnet18").

    Raises:
        ValueError: unknown name.
    """
    builders = {"simple_cnn": SimpleCNN, "resnet18": cifar_resnet18}
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(builders)}")
    return builders[name]()


def apply_device_settings(config: BenchConfig) -> dict:
    """Apply ``config.tf32`` and ``config.cudnn_benchmark`` to torch (process-wide) and return the
    settings read back from torch.

    TF32 runs float32 matmuls and cuDNN convolutions on Ampere+ tensor cores with a 10-bit
    mantissa; elsewhere (CPU, older GPUs) the flags are set but change nothing. Call it before
    training, in every rank's process.

    Returns:
        ``{"matmul_allow_tf32": bool, "cudnn_allow_tf32": bool, "float32_matmul_precision":
        "high" | "highest" (or "medium" if set elsewhere), "cudnn_benchmark": bool}``.
    """
    # "high" = TF32 allowed for float32 matmuls (what torch.backends.cuda.matmul.allow_tf32 reads)
    torch.set_float32_matmul_precision("high" if config.tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = config.tf32
    # the autotuner picks the fastest convolution algorithm per input shape (fixed 32x32 here)
    torch.backends.cudnn.benchmark = bool(config.cudnn_benchmark)
    return {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark}


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters (elements)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


class CifarModule(L.LightningModule):
    """Network + cross-entropy loss + SGD with momentum + torchmetrics accuracy.

    Batches are ``(images, labels)`` with images (n, 3, 32, 32) uint8 (normalised here, after the
    transfer to the device) or float32 already normalised (``pil`` data path), and labels (n,)
    int64, where n is this rank's share of the global batch. On the ``device`` data path training
    batches arrive as :class:`~bench.data.datapaths.IndexBatch` and the datamodule makes the images.

    The loss is ``sum(per-image loss) / global batch * ranks``, so that DDP's averaging of
    gradients over ranks gives exactly the mean over the global batch, also for a last batch
    split unevenly.

    Args:
        config: the run's configuration (lr, momentum, weight decay, model).
    """

    def __init__(self, config: BenchConfig) -> None:
        super().__init__()
        self.config = config
        self.net = build_network(config.model)
        if config.channels_last:  # 4-D weights NHWC-strided, matching the channels_last inputs
            self.net = self.net.to(memory_format=torch.channels_last)
        if config.compile:  # in place (nn.Module.compile): parameter names and state_dict keys stay the same
            self.net.compile()
        # Test metrics accumulate per rank and synchronise once, in compute(): no per-step
        # collective, so uneven test shards over the ranks cannot hang.
        # validate_args=False: the default checks run torch.unique on predictions and targets in each
        # update, two device synchronisations per step; these tensors are the module's own.
        self.test_accuracy = torchmetrics.classification.MulticlassAccuracy(NUM_CLASSES, average="micro",
                                                                            validate_args=False)
        # training accuracy of each epoch (on the augmented batches): a per-step count on the device (one
        # small kernel, no host sync; a torchmetrics update per step cost ~0.2 ms on CPU), summed over
        # the ranks once, at epoch end
        self.train_correct = torch.zeros((), dtype=torch.int64)  # this rank's right answers this epoch
        self.train_seen = 0  # this rank's training images this epoch
        self.train_accuracies: list[float] = []  # one fraction per epoch, global over all ranks
        # right answers and images of the current evaluation pass: a device count and a host int, summed over
        # the ranks once, at its end (torchmetrics' SumMetric ran a NaN check, `nans.any()`, a host read per
        # update: two per step on a GPU; issue 31 item 4)
        self.eval_correct = torch.zeros((), dtype=torch.int64)
        self.eval_seen = 0
        self.loss_sum = torch.zeros(())  # this rank's loss summed over the current epoch's steps
        self.loss_steps = 0
        self.test_results: dict[str, float] = {}
        # Lightning's manual optimization (a documented mode of LightningModule): training_step does the
        # same zero_grad, backward (self.manual_backward: precision, DDP and the backward hooks as in the
        # automatic loop) and optimizer step, without the automatic loop's closure and its per-step
        # bookkeeping: 965 -> 816 Python calls a training step on CPU (device path), ~0.1 ms; on a GPU,
        # where the host drives a sub-millisecond step, that is time the benchmark would otherwise measure.
        self.automatic_optimization = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # Plain attributes set on every training step: Lightning's ``_current_fx_name`` (set and restored
    # around each of ~22 hook calls a step) and this module's counters. nn.Module.__setattr__ checks
    # parameters, buffers and submodules first (~1.3 us a call on CPU, ~60 us a step); for these names,
    # never a Parameter, Tensor or Module, object.__setattr__ does the same in a tenth of that.
    _PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "loss_steps", "train_seen", "eval_seen"})

    def __setattr__(self, name: str, value) -> None:
        if name in CifarModule._PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Move a flat batch (a tuple of tensors or an :class:`~bench.data.datapaths.IndexBatch`) to ``device``.

        Lightning's default walks any collection (``apply_to_collection``: ~25 us a step on CPU); these
        batches are flat. Copies to a GPU are non-blocking, as Lightning's (``move_data_to_device``).
        """
        if isinstance(batch, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in batch):
            non_blocking = device.type not in ("cpu", "mps")
            moved = [t.to(device, non_blocking=non_blocking) for t in batch]
            return batch._make(moved) if hasattr(batch, "_make") else type(batch)(moved)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """On the device the batch was moved to: make index batches into images (``device`` data
        path), normalise uint8 images, and convert to channels_last when configured.

        The only batch hook Lightning calls here (this module's overrides the datamodule's), so
        the datamodule's share of the work is asked for explicitly.
        """
        if isinstance(batch, IndexBatch):
            batch = self.trainer.datamodule.device_batch(batch)
        images, labels = batch
        if images.dtype == torch.uint8:  # the pil path's batches come normalised already
            images = normalize(images)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """This rank's share of the mean cross-entropy over the global batch: ``sum(per-image loss) *
        world / global batch``. When this rank holds exactly its even share (always, but for an uneven
        last batch) that is the plain mean over the local batch, one kernel less.

        The global batch sizes come from the attached datamodule (``global_batch_sizes``); without
        one (unit tests) this is the plain mean over the local batch.
        """
        sizes = getattr(getattr(self._trainer, "datamodule", None), "global_batch_sizes", None)
        if sizes and batch_idx < len(sizes):
            world = self._trainer.world_size
            if sizes[batch_idx] != len(labels) * world:
                return F.cross_entropy(logits, labels, reduction="sum") * (world / sizes[batch_idx])
        return F.cross_entropy(logits, labels)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimizer step on this rank's share of a global batch; returns the loss (a scalar tensor)."""
        loss = self.step_loss(batch, batch_idx)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)  # as the automatic loop: after the forward, before backward
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def step_loss(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The forward pass and this rank's share of the global batch's mean loss (see :meth:`_loss`);
        counts the right answers and images for the epoch's training accuracy and logs the loss
        every ``log_every_n_steps`` steps. Returns a scalar tensor with its graph (not yet backward)."""
        images, labels = batch
        logits = self(images)
        loss = self._loss(logits, labels, batch_idx)
        self._log_step_loss(loss)  # before the step: global_step still counts the steps before this one
        # in place (add_): an augmented assignment would go through nn.Module.__setattr__'s checks each step
        self.loss_sum.add_(loss.detach())
        self.loss_steps += 1
        self.train_correct.add_((logits.detach().argmax(dim=1) == labels).sum())
        self.train_seen += len(labels)
        return loss

    def _log_step_loss(self, loss: torch.Tensor) -> None:
        """Global rank 0 writes ``train/loss`` to the loggers every ``log_every_n_steps`` optimizer steps
        (at step = optimizer steps done, as Lightning's own step logging).

        Straight to the loggers: ``self.log`` costs ~0.3 ms a call on CPU in Lightning's bookkeeping, and
        its value is still read (a host sync on GPU) only on the steps written."""
        trainer = self._trainer
        if trainer is None or not trainer.loggers or (self.global_step + 1) % trainer.log_every_n_steps:
            return
        if trainer.is_global_zero:
            value = float(loss.detach())
            for logger in trainer.loggers:
                logger.log_metrics({"train/loss": value}, step=self.global_step)

    def on_train_epoch_end(self) -> None:
        # every rank gets here: one all-reduce of (right answers, images) gives the epoch's global accuracy
        counts = torch.stack([self.train_correct, torch.tensor(self.train_seen, device=self.device)])  # int64
        correct, seen = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        self.train_accuracies.append(correct / seen if seen else float("nan"))
        self.log("train/accuracy", self.train_accuracies[-1], rank_zero_only=True)

    def on_train_epoch_start(self) -> None:
        self.loss_sum, self.loss_steps = torch.zeros((), device=self.device), 0
        self.train_correct, self.train_seen = torch.zeros((), dtype=torch.int64, device=self.device), 0

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, labels = batch
        preds = self(images).argmax(dim=1)
        self.test_accuracy.update(preds, labels)
        self.eval_correct.add_((preds == labels).sum())  # in place, on the device: no host read
        self.eval_seen += labels.numel()  # a shape, known on the host

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def _start_evaluation(self) -> None:
        self.eval_correct, self.eval_seen = torch.zeros((), dtype=torch.int64, device=self.device), 0

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def _finish_evaluation(self, prefix: str) -> None:
        # compute() synchronises the accuracy's states over all ranks (one all-gather each), and one
        # all-reduce sums (right answers, images): the numbers below are global and identical on every rank.
        counts = torch.stack([self.eval_correct, torch.tensor(self.eval_seen, device=self.eval_correct.device)])
        correct, total = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        self.test_results = {"test_accuracy": float(self.test_accuracy.compute()), "test_correct": int(correct),
                             "test_total": int(total)}
        self.test_accuracy.reset()
        self.log(f"{prefix}/accuracy", self.test_results["test_accuracy"], rank_zero_only=True)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(self.parameters(), lr=c.lr, momentum=c.momentum,
                               weight_decay=c.weight_decay)
