"""selfcheck: checks of the benchmark itself, not of a machine - what the harness costs against bare
Lightning and a hand-written loop, in turns (parity, parity_sides, parity_report, timeslice:
`make parity`), and the prepared check for a first GPU (gpu_check: `make gpu-check`).

May import: every wing below it (core ... report).
"""
