"""run: how a case runs - the `run` command (command), one case end to end (runner) and the result parts read from its fit (runfacts), the model and
Trainer (model, training), DataParallel and DDP set-up (dataparallel, ranks, comm), CPU threads and
workers (threads), faults and signals (faults), the callbacks that carry the instruments
(instruments) and the test knobs that slow a run on purpose (knobs).

May import: core, measure, data, results.
"""
