"""The wall time's phases as plain data (pure, torch-free, so that ``table`` and ``report`` need no torch):
:func:`split` turns consecutive windows into seconds per phase; :func:`phase_line` prints them.
What each phase covers: :mod:`bench.measure.phases`.
"""

from __future__ import annotations

#: The phases in the order they happen, as the result names them (seconds each)
PHASES = ("import_s", "data_s", "setup_s", "process_group_s", "interconnect_s", "fit_s", "test_s", "gather_s")
LABELS = {"import_s": "import", "data_s": "data", "setup_s": "set-up", "process_group_s": "process group",
          "interconnect_s": "interconnect", "fit_s": "fit", "test_s": "test", "gather_s": "gather",
          "remainder_s": "remainder"}

def split(spans: list[tuple[float, str]], wall_s: float, interconnect_s: float = 0.0) -> dict:
    """Seconds per phase from consecutive windows (pure).

    Args:
        spans: ``[(start, phase), ...]`` in time order, seconds from the process start; each window
            ends where the next starts, the last at ``wall_s``.
        wall_s: the run's wall time (s). interconnect_s: the interconnect check's seconds, taken out of
            ``process_group_s`` (the window it ran in; never below 0, an excess stays in the remainder).

    Returns:
        ``{phase: s for phase in PHASES} | {"remainder_s": wall_s - sum, "wall_s": wall_s}``.
    """
    seconds = dict.fromkeys(PHASES, 0.0)
    for (start, phase), (end, _) in zip(spans, spans[1:] + [(wall_s, None)]):
        seconds[phase] += max(0.0, end - start)
    taken = min(interconnect_s, seconds["process_group_s"])
    seconds["process_group_s"] -= taken
    seconds["interconnect_s"] = interconnect_s
    return {**seconds, "remainder_s": wall_s - sum(seconds.values()), "wall_s": wall_s}


def phase_line(phases: dict | None) -> str:
    """``"import 3.1 s, data 1.2 s, ... (remainder 0.0 s of wall 28.3 s)"`` or "" without phases."""
    if not phases:
        return ""
    parts = [f"{LABELS[p]} {phases[p]:.1f} s" for p in PHASES if phases.get(p)]
    return f"{', '.join(parts)} (remainder {phases['remainder_s']:.1f} s of wall {phases['wall_s']:.1f} s)"
