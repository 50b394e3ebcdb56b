"""The two sides of an A/B comparison, and the command line of one run of a side.

A side is what users compare (docs/ab.md): a command that runs Python (``apptainer exec IMAGE python``,
another venv's or checkout's ``python``, ``podman run ... IMAGE python``; default: this Python), the
environment variables set for its runs (``NCCL_ALGO=Ring``, ``OMP_NUM_THREADS=1``, ...) and run options
of its own (added after the common ones, so they win). Each run is

    LAUNCHER... SIDE_COMMAND... -m bench run COMMON_OPTIONS... --case CASE SIDE_OPTIONS... --out OUT/SIDE

with ``BENCH_RUN_ID=<case>-ab<SIDE>-p<pair>-<stamp>`` (the result file's name: it names the side) and
the side's variables added to this process's environment. The order of the sides alternates pair by
pair (AB, BA, AB, ...): neither side always runs first, and a linear drift of the machine's speed
over two pairs hits both sides alike.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.config import ConfigError

NAMES = ("A", "B")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Side:
    """One side: ``name`` "A" or "B"; ``command`` the argv that runs Python; ``env`` variables set for
    its runs (name -> value); ``args`` its own ``cifar-bench run`` options."""

    name: str
    command: tuple[str, ...] = (sys.executable,)
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()

    def describe(self) -> str:
        """The side in one line, for the output and ab.json."""
        parts = [f"command: {shlex.join(self.command)}"]
        if self.env:
            parts.append("env: " + " ".join(f"{k}={v}" for k, v in self.env.items()))
        if self.args:
            parts.append(f"run options: {shlex.join(self.args)}")
        return f"{self.name}: " + "; ".join(parts)

    def as_json(self) -> dict:
        return {"command": list(self.command), "env": dict(self.env), "args": list(self.args)}

    @classmethod
    def from_json(cls, name: str, obj: dict) -> "Side":
        """The side of :meth:`as_json`'s dict."""
        return cls(name, tuple(obj["command"]), dict(obj["env"]), tuple(obj["args"]))


def parse_env(items: list[str] | None, side: str) -> dict[str, str]:
    """``NAME=VALUE`` items as a dict.

    Raises:
        ConfigError: an item without '=' or with a name that is not a variable name.
    """
    env = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            raise ConfigError(f"--{side.lower()}-env {item!r}: expected NAME=VALUE, e.g. NCCL_ALGO=Ring")
        env[name] = value
    return env


def side_of(name: str, command: str | None, env: list[str] | None, args: str | None) -> Side:
    """A :class:`Side` from the command-line texts (``command`` and ``args`` split as a shell would).

    Raises:
        ConfigError: an empty command, a bad ``NAME=VALUE``, or unbalanced quotes.
    """
    try:
        argv = tuple(shlex.split(command)) if command is not None else (sys.executable,)
        extra = tuple(shlex.split(args or ""))
    except ValueError as err:
        raise ConfigError(f"side {name}: {err} in {command!r} or {args!r}") from None
    if not argv:
        raise ConfigError(f"--{name.lower()}-cmd is empty: give the command that runs Python, e.g. "
                          "'apptainer exec cifar.sif python' (default: this Python)")
    for option in ("--out", "--case", "--repeats"):
        if any(a == option or a.startswith(option + "=") for a in extra):
            raise ConfigError(f"--{name.lower()}-args must not set {option}: the A/B command sets it for both sides")
    return Side(name, argv, parse_env(env, name), extra)


def order(pair: int) -> tuple[str, str]:
    """The sides in the order pair ``pair`` (0-based) runs them: AB, BA, AB, ..."""
    return NAMES if pair % 2 == 0 else NAMES[::-1]


def run_id(case: str, side: str, pair: int, stamp: str) -> str:
    """The run id (and result file name) of one run: ``<case>-ab<side>-p<pair, from 1>-<stamp>``."""
    return f"{case}-ab{side}-p{pair + 1:02d}-{stamp}"


def run_argv(side: Side, launcher: list[str], common: list[str], case: str, out: Path) -> list[str]:
    """The command line of one run of ``side`` (see the module docstring); ``out`` the A/B folder."""
    return [*launcher, *side.command, "-m", "bench", "run", *common, "--case", case, *side.args,
            "--out", str((out / side.name).resolve())]


def check_options(side: Side, common: list[str], cases: list[str]) -> None:
    """Check, before anything runs, that the side's run options give a valid configuration per case.

    Raises:
        ConfigError: an unknown option or an invalid value (the run's own message).
    """
    import contextlib
    import io

    from bench.run.command import add_parser, run_config
    from bench.scaling.sweep import _Into

    parser = argparse.ArgumentParser(prog="cifar-bench run", exit_on_error=False, add_help=False,
                                     conflict_handler="resolve")
    add_parser(_Into(parser))
    for case in cases:
        words = [*common, "--case", case, *side.args]
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):  # (argparse prints its usage before exiting)
                args, extras = parser.parse_known_args(words)
        except (argparse.ArgumentError, SystemExit) as err:
            why = str(err) if isinstance(err, argparse.ArgumentError) else said.getvalue().strip().splitlines()[-1]
            raise ConfigError(f"side {side.name}: the run options {shlex.join(words)} are invalid ({why})") from None
        if extras:
            raise ConfigError(f"side {side.name}: unknown run option(s) {' '.join(extras)}")
        try:
            run_config(args)
        except ConfigError as err:
            raise ConfigError(f"side {side.name}, case {case}: {err}") from None


def check_command(side: Side) -> None:
    """Check, before anything runs, that the side's command names a program this machine has (a trial's
    ``--b-cmd /nonexistent/python`` ran side A in full, then failed on B with another message).

    Raises:
        ConfigError: the program is not found or not executable.
    """
    import os
    import shutil

    program = side.command[0]
    found = shutil.which(program) if os.sep not in program else (program if os.access(program, os.X_OK) else None)
    if found is None:
        raise ConfigError(f"side {side.name}: the command {shlex.join(side.command)} names {program}, which is not "
                          f"an executable here: give a Python (e.g. other-venv/bin/python) or a command that runs one")


def check_data(data: str | None) -> None:
    """Check, before anything runs, that the data path holds a known layout (a trial's missing --data
    started 6 runs, then ended 'invalid' with exit 5 instead of bad input).

    Raises:
        ConfigError: the run's own message (bench.data.sources.detect_kind).
    """
    from pathlib import Path

    from bench.data.sources import DataError, detect_kind

    if data and data != "synthetic":
        try:
            detect_kind(Path(data).expanduser())
        except DataError as err:
            raise ConfigError(str(err)) from None

