"""The command line's help is generated from the configuration's own field documentation.

Run:  .venv/bin/python -m pytest -q tests/test_cli_help.py   (about 2 s, no training)
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from bench.cli import parser
from bench.core.config import PRESETS, BenchConfig


def _run_help() -> str:
    sub = next(a for a in parser()._actions if a.dest == "command")
    return sub.choices["run"].format_help()


def test_every_config_field_is_documented_with_a_unit_key():
    for f in dataclasses.fields(BenchConfig):
        assert f.metadata.get("help"), f"{f.name}: no help in its metadata (bench.core.config._doc)"
        assert "unit" in f.metadata, f"{f.name}: no unit key (None where the value has no unit)"


def test_every_run_option_shows_its_default_and_per_preset_values():
    text = re.sub(r"\s+", " ", _run_help())
    options = [a for a in next(a for a in parser()._actions if a.dest == "command").choices["run"]._actions
               if a.option_strings and a.dest != "help"]
    fields = {f.name for f in dataclasses.fields(BenchConfig)}
    assert fields <= {a.dest for a in options}, "a config field has no run option"
    for action in options:
        assert action.help and "(default:" in action.help, f"{action.option_strings}: no default in its help"
    # the values that depend on the preset are shown for every preset, read from PRESETS itself
    for name in ("epochs", "global_batch_size", "lr", "accelerator"):
        shown = ", ".join(f"{p} {PRESETS[p][name]}" for p in PRESETS)
        assert f"by preset: {shown}" in text, name
    assert "dp: every GPU torch sees on the node" in text  # the machine-dependent default of dp's devices
    assert "--out PATH" in text and "--repeats" in text and "--no-tf32" in text


def test_help_texts_come_from_the_field_metadata():
    text = re.sub(r"\s+", "", _run_help())  # argparse wraps lines, also after hyphens
    for f in dataclasses.fields(BenchConfig):
        assert re.sub(r"\s+", "", f.metadata["help"]) in text, f.name


def test_top_level_help_is_plain_text_with_exit_status(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":mod:" not in out  # no reST markup
    assert "exit status: 0 ok, 1 failed, 2 bad input" in out


@pytest.mark.parametrize("flags, field, value", [
    (["--profile"], "profile", True), (["--save-weights"], "save_weights", True),
    (["--no-step-breakdown"], "step_breakdown", False), (["--out", "x/y"], "out_dir", "x/y"),
    (["--momentum", "0.5"], "momentum", 0.5), ([], "momentum", 0.9), ([], "profile", False),
])
def test_generated_options_reach_the_config(flags, field, value):
    from bench.run.command import run_config

    config = run_config(parser().parse_args(["run", "--data", "synthetic", *flags]))
    assert getattr(config, field) == value


def test_ctrl_c_before_training_is_one_line_and_130(monkeypatch, capsys):
    from bench import cli

    def interrupted(argv):
        raise KeyboardInterrupt  # as a Ctrl-C while the data set is decoded

    monkeypatch.setattr(cli, "_main", interrupted)
    assert cli.main(["run"]) == 130
    err = capsys.readouterr().err
    assert err == "cifar-bench: interrupted (SIGINT) before training started; nothing was recorded\n"


def test_an_unknown_option_points_to_the_help_of_its_command(capsys):
    import pytest

    from bench import cli

    with pytest.raises(SystemExit) as stop:
        cli.parser().parse_args(["run", "--bogus-opt"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "cifar-bench: error: unrecognized arguments: --bogus-opt (see `cifar-bench run --help`)\n"


def test_an_option_before_any_command_asks_for_the_command_first(capsys):
    import pytest

    from bench import cli

    with pytest.raises(SystemExit) as stop:
        cli.parser().parse_args(["--bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("cifar-bench: error: unknown option --bogus: name a command first (run, data, table,")
    for words, said in ((["--case", "baseline"], "it is an option of run, sweep, mark-interrupted; "
                                                 "e.g. `cifar-bench run --case baseline`"),
                        (["--epochs", "1", "run", "--case", "ddp"], "`cifar-bench run --epochs 1 --case ddp`"),
                        (["--data=synthetic", "run"], "`cifar-bench run --data=synthetic`"),
                        (["--preset", "smoke", "table", "x.json"], "--preset is not an option of table (it is one of run,"),
                        ([], "no command given: name one of run, data, table,"),
                        (["sweep", "--case", "ddp", "--out", ""], "argument --out: empty: name a folder"),
                        (["data", "download", " "], "argument dir: empty: name a folder")):
        with pytest.raises(SystemExit):
            cli.parser().parse_args(words)
        assert said in capsys.readouterr().err


def test_mark_interrupted_asks_for_what_the_record_needs(capsys):
    """The record of a case that could not write its own names its preset, data and reason: none is guessed."""
    import pytest

    from bench import cli

    base = ["mark-interrupted", "--case", "ddp", "--out", "runs/x"]
    for words, said in (([*base, "--data", "synthetic", "--reason", "time limit"], "the following arguments are required: --preset"),
                        ([*base, "--preset", "smoke", "--reason", "time limit"], "the following arguments are required: --data"),
                        ([*base, "--preset", "smoke", "--data", "synthetic", "--reason", " "],
                         "argument --reason: empty: say what happened")):
        with pytest.raises(SystemExit) as stop:
            cli.parser().parse_args(words)
        assert stop.value.code == 2 and said in capsys.readouterr().err
    args = cli.parser().parse_args([*base, "--preset", "cpu", "--data", "synthetic", "--reason", "time limit"])
    assert (args.preset, args.data, args.reason, args.status) == ("cpu", "synthetic", "time limit", "interrupted")


@pytest.mark.parametrize("command", ["compare", "baseline record", "report", "history", "ab", "comm"])
def test_every_tolerance_is_a_finite_percentage(command):
    # --tolerance nan judged any slowdown 'unchanged'; history took -5 (a new user's trial)
    import subprocess
    import sys
    for bad in ("nan", "-5", "inf", "ten"):
        proc = subprocess.run([sys.executable, "-m", "bench", *command.split(), "--tolerance", bad],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and f"--tolerance: '{bad}'" in proc.stderr and "Traceback" not in proc.stderr, \
            (bad, proc.stderr[-1000:])
