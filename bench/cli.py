"""The ``cifar-bench`` command line (also ``python -m bench``), built on argparse.

    cifar-bench run --case ddp --data ../shared/data/cifar10-jpeg.tar.gz --preset cpu --devices 2
    cifar-bench data download DIR
    cifar-bench data prepare --data PATH
    cifar-bench table RESULT.json...
    cifar-bench compare RESULT.json... --baseline a100-2node [--tolerance 10]
    cifar-bench baseline record RESULT.json... --name NAME
    cifar-bench report RESULTS... [--baseline NAME] --out DIR

Exit status: the one table of bench/core/exitcodes.py (docs/exit-codes.md). Each command but ``data`` owns its
parser and handler in its module (``run``: bench.run.command, ``sweep``: bench.scaling.sweep, ``table``: bench.results.resultfile,
``compare``: bench.results.compare, ``baseline``: bench.results.recording, ``report``: bench.report.report); the analysis
commands never import torch or Lightning, so they start fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from bench.core.config import CASES, DATA_ENV, PRESETS, ConfigError, make_config
from bench.core.exitcodes import ExitCode
from bench.core.files import folder_argument
from bench.run import command as run_command
from bench.run import comm_command

EXIT_BAD_INPUT = ExitCode.BAD_INPUT


def _add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="stage the data set (download or decode into the cache)",
                       description="Stage the data set ahead of jobs: download the official CIFAR-10, or decode a data "
                                   "set once into the cache that every run then only reads.")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    d = dsub.add_parser("download", help="download the official CIFAR-10 (MD5-checked) into DIR",
                        description="Download the official CIFAR-10 python batches (MD5-checked) into DIR; "
                                    "needs internet.")
    d.add_argument("dir", type=folder_argument, help="folder to download into (created if needed)")
    r = dsub.add_parser("prepare", help="decode a data set into the cache, so jobs only read it",
                        description="Decode a data set into the cache once (under a file lock), so that jobs, and "
                                    "every rank of a job, only read it. A second call finds the cache and does nothing.")
    r.add_argument("--data", help="data set: a folder or .tar.gz, official CIFAR-10 or class-per-folder "
                                  f"(default: ${DATA_ENV})")
    r.add_argument("--data-checksums", help="MD5 check of the official files: official (default), skip, or a "
                                            "JSON file {file name: md5}")
    r.add_argument("--cache-dir", help="cache folder (default: $BENCH_CACHE, else ~/.cache/cifar-bench)")


# The top-level --help, as plain text (the module docstring is for developers).
DESCRIPTION = """\
Time data-parallel training of a CNN on CIFAR-10 as three cases (baseline: one device,
dp: DataParallel over the GPUs of a node, ddp: one process per device, across nodes),
write each run as JSON, and compare runs against stored baselines. Same as: python -m bench"""

EXAMPLES = """\
examples:
  cifar-bench run --case ddp --devices 2 --preset cpu --data ../shared/data/cifar10-jpeg.tar.gz
  cifar-bench run --help                      every option, with its default per preset
  cifar-bench table runs/latest/*.json
  cifar-bench compare runs/latest/*.json --baseline a100-2node
  cifar-bench report runs/latest/*.json --out report/"""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, in the form of every other bad-input error (exit 2).

    (argparse prints the whole usage, 20 lines for ``run``, before its one-line reason.)
    Subparsers are built with the same class.
    """

    def _commands(self) -> dict:
        """This parser's commands (name -> subparser), or {} for a command's own parser."""
        found = [a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        return found[0] if found else {}

    def error(self, message: str):
        if (commands := self._commands()) and message.endswith("required: command"):
            message = f"no command given: name one of {', '.join(commands)} first, then its options"
        self.exit(int(ExitCode.BAD_INPUT), f"cifar-bench: error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown option points to the help of the command it was given to, and
        an option before the command (``cifar-bench --case baseline``) is said to belong after it."""
        words = sys.argv[1:] if args is None else list(args)
        if (commands := self._commands()) and words and words[0].startswith("-") and words[0] not in ("-h", "--help"):
            self.error(self._option_first(words, commands))
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = f"{self.prog} {parsed.command}" if getattr(parsed, "command", None) else self.prog
            self.exit(int(ExitCode.BAD_INPUT), f"cifar-bench: error: unrecognized arguments: {' '.join(extras)} "
                                               f"(see `{command} --help`)\n")
        return parsed


    def _option_first(self, words: list[str], commands: dict) -> str:
        """What to say when ``words`` start with an option instead of a command: which commands take it
        and, when one of them is named later, the words in the right order."""
        option = words[0].split("=", 1)[0]
        takers = [name for name, sub in commands.items() if option in sub._option_string_actions]
        if not takers:
            return f"unknown option {option}: name a command first ({', '.join(commands)}), then its options"
        # the command named later (not right after an option without "=": there it is more likely the
        # option's value, as in --case baseline)
        named = [i for i, w in enumerate(words) if w in commands and not
                 (words[i - 1].startswith("-") and "=" not in words[i - 1])]
        if named and words[named[0]] not in takers:
            return f"{option} is not an option of {words[named[0]]} (it is one of {', '.join(takers)})"
        order = [words[named[0]], *words[:named[0]], *words[named[0] + 1:]] if named else [takers[0], *words]
        return (f"{option} comes before the command: it is an option of {', '.join(takers)}; "
                f"e.g. `{self.prog} {' '.join(order)}`")


def _epilog() -> str:
    codes = ", ".join(f"{c.value} {c.name.lower().replace('_', ' ')}" for c in ExitCode)
    return f"{EXAMPLES}\n\nexit status: {codes} (see docs/exit-codes.md)"


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``cifar-bench``."""
    from bench.report import report
    from bench.results import compare, recording, resultfile
    from bench.history import command as history
    from bench.scaling import ab, sweep

    ap = _Parser(prog="cifar-bench", description=DESCRIPTION, epilog=_epilog(),
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    run_command.add_parser(sub)
    _add_data_parser(sub)
    resultfile.add_parser(sub)
    compare.add_parser(sub)
    recording.add_parser(sub)
    report.add_parser(sub)
    sweep.add_parser(sub)
    ab.add_parser(sub)
    comm_command.add_parser(sub)
    history.add_parser(sub)
    _add_mark_interrupted_parser(sub)
    return ap


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: say what happened, e.g. 'stopped by the Slurm time limit (SIGUSR1)'")
    return text


def _add_mark_interrupted_parser(sub) -> None:
    m = sub.add_parser("mark-interrupted", help="record a case as interrupted (used by slurm/suite.sh)",
                       description="Write the record of a case whose run could not write its own (e.g. stopped by "
                                   "the Slurm time limit before it started); a record the run wrote is kept as it is.")
    m.add_argument("--case", choices=CASES, required=True, help="the case that did not finish")
    m.add_argument("--preset", choices=tuple(PRESETS), required=True, help="the preset it was asked to run with")
    m.add_argument("--data", required=True, help="the data set it was asked to read (a path, or synthetic)")
    m.add_argument("--out", dest="out_dir", required=True, type=folder_argument, help="folder of the run's records")
    m.add_argument("--reason", required=True, type=_reason, help="what happened, in words (the record's reason)")
    m.add_argument("--status", choices=("interrupted", "failed"), default="interrupted", help="default: interrupted")
    m.set_defaults(func=cmd_mark_interrupted)


def cmd_data(args: argparse.Namespace) -> int:
    from bench.data import sources, staging

    if args.data_cmd == "download":
        print(f"downloaded: {sources.download(args.dir)}")
        return 0
    if not (args.data or os.environ.get(DATA_ENV)):
        raise ConfigError(f"data prepare: name the data set with --data PATH (a folder or .tar.gz), or set {DATA_ENV}")
    config = make_config("smoke", data=args.data, data_checksums=args.data_checksums, cache_dir=args.cache_dir)
    if config.data == "synthetic":
        raise ConfigError("data prepare decodes a data set on disk; synthetic data is made by each run in memory: "
                          "pass --data PATH")
    # the cache folder checked first, and the lock the ranks of a job use; the path's fingerprint stats
    # every file of a folder source, so it is computed once, there
    print(f"cache: {staging.ensure_data(config)}")
    return 0


# Lightning warnings that do not apply to this design (see the comments at each).
_QUIET = (
    # the module normalises batches in on_after_batch_transfer on purpose (after the device copy), and
    # moves its flat batches itself (transfer_batch_to_device: cheaper than Lightning's collection walk)
    r".*overridden `(on_after_batch_transfer|transfer_batch_to_device)` in `LightningModule`.*",
    # test metrics are synchronised by torchmetrics' compute(), once, not by self.log
    r".*sync_dist=True.* when logging on epoch level.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


# Lightning's info lines that say nothing a run's result does not (prefixes of the message).
# "Detected KeyboardInterrupt, attempting graceful shutdown": the run's own "interrupted: SIGINT (Ctrl-C)" line says it.
_NOT_ABOUT_THIS_RUN = ("\N{ELECTRIC LIGHT BULB} Tip:", "GPU available: ", "TPU available: ", "HPU available: ",
                       "\nDetected KeyboardInterrupt")


def _quiet_inapplicable_notices() -> None:
    """Silence, at their source, Lightning's notices that do not apply to a benchmark run."""
    import logging
    import os
    import warnings

    for pattern in _QUIET:
        warnings.filterwarnings("ignore", message=pattern)
    if not os.environ.get("SLURM_JOB_ID"):
        # Lightning warns whenever an `srun` is on PATH but the process was not started by it. Outside
        # a Slurm job there is nothing to start it with (a login node, or this machine, where the local
        # test cluster's srun is installed); inside a job (sbatch running python directly) it applies.
        warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")
    advert = logging.Filter()
    # Lightning 2.6 advertises its cloud logging product (LitLogger/litmodels) at every Trainer start:
    # an advert, not a notice about this run. "GPU/TPU/HPU available: ..., used: ..." is printed at every
    # Trainer start too: the result records the accelerator and devices that ran (config, environment).
    # Lightning's warnings ("GPU available but not used", ...) stay: they are about this run.
    advert.filter = lambda record: not str(record.msg).startswith(_NOT_ABOUT_THIS_RUN)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning_utilities.core.rank_zero"):
        logging.getLogger(name).addFilter(advert)


def cmd_mark_interrupted(args: argparse.Namespace) -> int:
    from bench.run.runner import record_lost_case

    print(f"result: {record_lost_case(args.preset, args.case, args.data, args.out_dir, args.status, args.reason)['path']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring). Ctrl-C before a run's training
    (while data is checked or decoded, or in an analysis command): one line and 130 (128 + SIGINT,
    what the shell shows for the default way), not a traceback; during training the run records it (4)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("cifar-bench: interrupted (SIGINT) before training started; nothing was recorded", file=sys.stderr)
        return 128 + signal.SIGINT


def _main(argv: list[str] | None) -> int:
    _quiet_inapplicable_notices()
    args = parser().parse_args(argv)
    if args.command not in ("run", "data", "sweep"):  # the analysis commands: bad files are ValueErrors
        try:
            return args.func(args)
        except ValueError as err:  # how the result and baseline readers report a bad file
            print(f"cifar-bench: error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except BrokenPipeError:  # the reader left (`| head`): no folder is at fault; the shell's SIGPIPE status
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python's flush at exit would fail)
            return 128 + signal.SIGPIPE
        except OSError as err:  # a folder to write into that is missing or read-only (--out, BENCH_BASELINES)
            where = err.filename or "the output folder"
            print(f"cifar-bench: error: cannot write {where}: {err.strerror}; create its folder or choose "
                  "another one", file=sys.stderr)
            return EXIT_BAD_INPUT
    from bench.core.files import DiskFullError

    try:
        if args.command == "run":
            return run_command.cmd_run(args, argv)
        if args.command == "sweep":
            from bench.scaling import sweep

            return sweep.run(args)
        return cmd_data(args)
    except DiskFullError as err:
        print(f"cifar-bench: error: {err.strerror}", file=sys.stderr)
        return ExitCode.FAILED
    except Exception as err:
        if not run_command.is_bad_input(err):
            raise
        print(f"cifar-bench: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main_exit() -> None:
    """Console-script entry point: exit with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":  # python -m bench.cli, as python -m bench
    main_exit()
