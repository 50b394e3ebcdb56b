"""cifar-bench: a reproducible benchmark of data-parallel CIFAR-10 training (baseline, DP, DDP).

The package is in wings, one concern each; a wing imports only wings below it in :data:`LAYERS`
(tests/test_layout.py checks every import, those inside functions too, from the source). Data flows
upwards: a config (core) names the data (data), a case trains on it and is measured (run, measure),
its result is written and judged (results), and points, reports and the harness's own checks read
those results (scaling, report, selfcheck). ``cli`` (the ``cifar-bench`` command line) is on top.
No ``__init__.py`` of a wing imports anything, so ``cifar-bench table`` never loads torch.
"""

__version__ = "0.1.0"

# The wings from the bottom up (README "Layout"); the top-level modules (cli, __main__) are above all.
LAYERS = ("core", "measure", "data", "results", "run", "scaling", "report", "history", "selfcheck")
