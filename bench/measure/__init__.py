"""measure: the instruments that time and explain a run, kept apart from what they measure - the
training clock and steady-state window (timing), the per-step breakdown and its tables (breakdown,
steptable), torch.profiler traces (profiling), the facts of the machine and software (environment),
and progress lines kept out of the timed path (progress).

May import: core.
"""
