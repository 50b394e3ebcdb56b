"""cifar-bench: a reproducible benchmark of data-parallel CIFAR-10 training (baseline, DP, DDP)."""

__version__ = "0.1.0"
