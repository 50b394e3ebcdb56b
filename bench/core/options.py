"""Command-line options generated from the configuration's own field documentation.

Every :class:`bench.core.config.BenchConfig` field becomes one ``cifar-bench run`` option whose help
line is the field's metadata (``help``, ``unit``) and the default a run really gets: the value per
preset where a preset sets the field (bench.core.config.PRESETS), or the note for defaults that depend
on the case or the machine. Help and defaults therefore cannot drift from the config.
"""

from __future__ import annotations

import argparse
import math
import dataclasses

from bench.core.config import PRESETS, option_for


def add_field_option(p: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    """One ``run`` option for config field ``f``: ``--field-name`` (or metadata ``option``).

    Its default is None ("keep the preset's value", see make_config), except for ``--case`` and
    ``--preset``, which choose the values; the help line shows the value a run really gets.
    """
    meta = f.metadata
    kwargs: dict = {"dest": f.name, "default": f.default if f.name in ("case", "preset") else None,
                    "help": _help_line(f)}
    if f.type in ("bool", bool, "bool | None"):  # (None: resolved from other fields, e.g. cudnn_benchmark)
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = {"int": int, "float": float}.get(str(getattr(f.type, "__name__", f.type)), str)
        kwargs["choices"] = meta.get("choices")
        if not kwargs["choices"]:
            kwargs["metavar"] = meta.get("metavar") or {int: "N", float: "X"}.get(kwargs["type"], "TEXT")
    p.add_argument(option_for(f.name), **kwargs)


def _help_line(f: dataclasses.Field) -> str:
    """``meaning [unit] (default: ...)``, from the field's metadata; ``%`` escaped for argparse."""
    meta = f.metadata
    unit = f" [{meta['unit']}]" if meta.get("unit") else ""
    text = f"{meta.get('help', '(undocumented config field)')}{unit} (default: {_default_text(f)})"
    return text.replace("%", "%%")


def _default_text(f: dataclasses.Field) -> str:
    """The default a run gets: the metadata's ``default_text``, the value per preset where a preset
    sets the field, else the field's default; then the metadata's ``default_note``."""
    meta = f.metadata
    if "default_text" in meta:
        text = meta["default_text"]
    elif f.name != "preset" and any(f.name in values for values in PRESETS.values()):
        text = "by preset: " + ", ".join(f"{name} {_shown(values.get(f.name, f.default))}"
                                          for name, values in PRESETS.items())
    else:
        text = _shown(f.default)
    return f"{text}; {meta['default_note']}" if meta.get("default_note") else text


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value == "" else str(value)


def tolerance_percent(text: str) -> float:
    """argparse type of every ``--tolerance``: a finite percentage >= 0 (float('nan') passed every
    comparison and judged any slowdown ``unchanged``; a negative one made every row a regression).

    Raises:
        argparse.ArgumentTypeError: not a number, not finite, or negative (argparse: exit 2, one line).
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: give the allowed change in percent, e.g. 10")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give the allowed change in percent as a finite number >= 0, e.g. 10")
    return value
