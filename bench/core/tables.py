"""The one table printer of the analysis commands: tabulate, with the project's conventions.

Cells are given as text (numbers formatted by the caller, ``None`` printed as ``-``); tabulate
only aligns them. ``fmt`` is a tabulate format: ``simple`` for the terminal, ``pipe`` for markdown.
"""

from __future__ import annotations

from typing import Any, Sequence

from tabulate import tabulate


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "simple",
           align: Sequence[str] | None = None) -> str:
    """The table as text; ``align`` per column "left"/"right" (default left); no number parsing."""
    cells = [["-" if c is None else str(c) for c in row] for row in rows]
    return tabulate(cells, headers=list(headers), tablefmt=fmt, disable_numparse=True,
                    colalign=tuple(align) if align else None)


def fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or ``-`` for None."""
    return "-" if value is None else format(value, spec)


def fmt_seconds(s: float | None) -> str:
    """Seconds with the precision a reader needs: 123 s, 12 s, 1.2 s, 0.12 s (``-`` for None)."""
    if s is None:
        return "-"
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s" if s >= 1 else f"{s:.2f} s"
