"""What the GPU check needs from the lent machine's own Python before it runs anything: the non-public
torch/Lightning names the project imports (each guarded where used) and the third-party packages ``bench
run`` imports on start. Both are reported in the check's output and JSON, never assumed."""

from __future__ import annotations


#: the non-public torch/Lightning names the project imports (module, name) -> the project module using it, and
#: what it does without it (each use is guarded there: a lent machine's own torch/Lightning may lack one)
PRIVATE_IMPORTS = {
    ("lightning.pytorch.strategies.launchers.subprocess_script", "_launch_process_observer"):
        "bench.run.faults (Lightning's child observer, replaced; absent: nothing to replace)",
    ("lightning.pytorch.utilities.exceptions", "SIGTERMException"):
        "bench.run.faults, bench.run.runner, bench.run.stopping (absent: a SIGTERM is recorded by its SystemExit)",
    ("torch.distributed.algorithms.ddp_comm_hooks.default_hooks", "allreduce_hook"):
        "bench.measure.breakdown (absent: DDP's own all-reduce, no last-bucket time stamp)",
    ("lightning.fabric.utilities.seed", "pl_worker_init_function"):
        "bench.selfcheck.parity_sides (make parity only: not on the check's path)",
}


def private_imports() -> dict[str, str]:
    """Each of :data:`PRIVATE_IMPORTS` as ``"module.name": "ok"`` or ``"missing (why); used by ..."``."""
    import importlib

    found = {}
    for (module, name), user in PRIVATE_IMPORTS.items():
        try:
            present = hasattr(importlib.import_module(module), name)
            why = f"{module} has no {name}"
        except ImportError as err:
            present, why = False, str(err)
        found[f"{module}.{name}"] = "ok" if present else f"missing ({why}); used by {user}"
    return found


#: third-party packages (beyond torch, torchvision, Lightning, torchmetrics) that ``bench run`` imports on start
NEEDED_PACKAGES = {"tabulate": "bench.core.tables (make gpu-check carries the lock's copy in .gpu-check/site)",
                   "numpy": "bench.data, bench.measure.breakdown", "yaml": "Lightning's hyperparameter files"}


def missing_packages() -> dict[str, str]:
    """Each of :data:`NEEDED_PACKAGES` this Python cannot find, with who needs it (empty: all there)."""
    import importlib.util

    return {name: who for name, who in NEEDED_PACKAGES.items() if importlib.util.find_spec(name) is None}
