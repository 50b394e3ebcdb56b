"""Faults of a multi-rank run: checks before launch, watchers that end a run whose rank died, and
the record of what broke.

Who ends a broken run, by launch mode:

* one machine, Lightning's launcher: global rank 0 is also the parent of the other ranks.
  :class:`ChildWatch` (a thread in rank 0) polls the children every :data:`POLL_S`; when one
  exits non-zero it writes the ``failed`` result naming that rank and its exit status, kills the
  other children and ends rank 0. :class:`ParentWatch` (a thread in every child rank) notices when
  rank 0 is gone (the child's parent changed); it writes the ``failed`` result naming rank 0 and
  ends the child. A rank 0 that fails with an exception kills its children itself
  (:func:`kill_children`), after writing its record.
* ``srun``: each task is a rank; ``srun --kill-on-bad-exit`` (slurm/suite.sh) kills the others
  when one exits non-zero, and slurm/suite.sh writes the record when rank 0 could not.

Results are written first-writer-wins (:func:`bench.results.resultfile.write_json_atomic` with
``exclusive=True``): when rank 0 and a watcher race, the first record stays.
Every wait for a rank is bounded by ``config.pg_timeout_s`` (the process group's timeout).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Callable

from bench.core.config import BenchConfig, ConfigError

#: Set by global rank 0 before Lightning's launcher starts the other ranks: its PID.
LAUNCHER_ENV = "BENCH_LAUNCHER_PID"
POLL_S = 0.5  # how often the watchers look (s): the bound on fault-to-record time they add


def check_srun(config: BenchConfig, env: dict | None = None) -> None:
    """Refuse a run inside a Slurm allocation of several tasks that ``srun`` did not start, and ddp
    over several nodes in a process that no launcher started (:func:`_check_node_launcher`).

    ``srun`` sets ``SLURM_STEP_ID`` (and ``SLURM_STEPID``) in every task it starts; the batch
    script itself has ``SLURM_JOB_ID`` and ``SLURM_NTASKS`` but no step id. Without this check
    Lightning's SLURMEnvironment takes the job's task count as the world size and rank 0 waits
    for ranks nobody started.

    Raises:
        ConfigError: naming the variables seen and the fix (run the command under ``srun``).
    """
    env = os.environ if env is None else env
    _check_node_launcher(config, env)
    ntasks = env.get("SLURM_NTASKS", "")
    if not env.get("SLURM_JOB_ID") or not ntasks.isdigit() or int(ntasks) < 2:
        return
    if env.get("SLURM_STEP_ID") is not None or env.get("SLURM_STEPID") is not None:
        return
    shown = " ".join(f"{k}={env[k]}" for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_NNODES")
                     if k in env)
    raise ConfigError(
        f"this job has {ntasks} Slurm tasks ({shown}) but this process was not started by srun (no SLURM_STEP_ID): "
        f"the other ranks would never start and rank 0 would wait for them. Start the ranks with srun, e.g. "
        f"`srun python -m bench run --case {config.case} ...` in the sbatch script (or sbatch -n1 for one process)")


#: Variables by which a launcher tells a process its node or rank: srun's step (SLURMEnvironment),
#: Lightning's own NODE_RANK (LightningEnvironment), torchrun's GROUP_RANK/RANK, LSF, MPI.
NODE_LAUNCHER_VARS = ("SLURM_STEP_ID", "SLURM_STEPID", "NODE_RANK", "GROUP_RANK", "RANK", "LSB_JOBID",
                      "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def _check_node_launcher(config: BenchConfig, env) -> None:
    """Refuse ddp over several nodes in a process that no launcher started: nothing would start the
    other nodes' ranks, and rank 0 would wait --pg-timeout-s (default 300 s) for them.

    Raises:
        ConfigError: naming --num-nodes and the ways to start the ranks.
    """
    if config.case != "ddp" or config.num_nodes < 2 or any(env.get(v, "").strip() for v in NODE_LAUNCHER_VARS):
        return  # (an empty NODE_RANK= is no launcher: Lightning would fail on int(''))
    raise ConfigError(
        f"--num-nodes {config.num_nodes}: no launcher started this process (no SLURM_STEP_ID, NODE_RANK or RANK), "
        f"so nothing would start the other nodes' ranks and rank 0 would wait --pg-timeout-s for them. Start "
        f"one task per device with srun (`sbatch slurm/suite.sh`, or inside an allocation `srun -N{config.num_nodes} "
        f"--ntasks-per-node={config.devices} python -m bench run --case ddp ...`), or start the command on every node "
        f"with NODE_RANK (0..{config.num_nodes - 1}), MASTER_ADDR and MASTER_PORT set, or use --num-nodes 1 here")


def is_launched_child(env: dict | None = None) -> bool:
    """True in a rank that Lightning's launcher started on this machine (not rank 0, not srun)."""
    env = os.environ if env is None else env
    return (env.get(LAUNCHER_ENV, "") not in ("", str(os.getpid())) and env.get("LOCAL_RANK", "0") != "0"
            and "SLURM_STEP_ID" not in env)


def mark_launcher(config: BenchConfig) -> None:
    """In the process that will start the other ranks itself: export its PID for them."""
    if config.case == "ddp" and config.devices > 1 and "SLURM_STEP_ID" not in os.environ \
            and "LOCAL_RANK" not in os.environ:
        os.environ[LAUNCHER_ENV] = str(os.getpid())
        _quiet_lightning_observer()


def _quiet_lightning_observer() -> None:
    """Replace Lightning's child-process observer by :func:`child_watch`.

    Lightning 2.6's observer SIGKILLs rank 0 itself within 5 s of a child's non-zero exit, also
    while rank 0 is writing the record of that very failure (or of a SIGTERM all ranks got), so
    the run could end with no record and status 137. child_watch does the same job after the record.
    """
    try:  # a non-public Lightning module (the GPU check names it): without it there is no observer to quiet
        from lightning.pytorch.strategies.launchers import subprocess_script
    except ImportError:
        return
    if hasattr(subprocess_script, "_launch_process_observer"):
        subprocess_script._launch_process_observer = lambda child_processes: None


def sigterm_exception() -> type[BaseException]:
    """Lightning's ``SIGTERMException`` (what its SIGTERM handler raises), or a class nothing raises where this
    Lightning lacks that non-public module (the GPU check names it)."""
    try:
        from lightning.pytorch.utilities.exceptions import SIGTERMException
    except ImportError:
        return type("NoSIGTERMException", (BaseException,), {})
    return SIGTERMException


def interruption(err: BaseException) -> str:
    """What stopped a run from outside, for its ``interrupted`` record: the signal where it can be told.

    Lightning turns SIGTERM into ``SIGTERMException`` and answers Ctrl-C's ``KeyboardInterrupt`` with
    ``sys.exit(1)`` from inside its handler (``lightning.pytorch.trainer.call._call_and_handle_interrupt``),
    so a ``SystemExit`` whose context is a ``KeyboardInterrupt`` was a SIGINT.
    """
    if isinstance(err, sigterm_exception()):  # bench.run.stopping names the ranks that got it
        detail = f"; {err.code}" if isinstance(err.code, str) else ""
        return f"SIGTERM (Slurm's time limit or scancel, or kill{detail})"
    if isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt):
        return "SIGINT (Ctrl-C)"
    return f"{type(err).__name__} (exit status {err.code})" if isinstance(err, SystemExit) else type(err).__name__


def _exit_text(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def lost_children(trainer) -> list[str]:
    """Lightning-launched ranks of this node that already exited non-zero, as text
    (``"rank 1 (pid 123, host h) killed by SIGKILL"``); [] under srun or with one process."""
    procs = getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or []
    host, lost = socket.gethostname(), []
    for local_rank, proc in enumerate(procs, start=1):
        if proc.poll() not in (None, 0):
            rank = trainer.node_rank * trainer.num_devices + local_rank
            lost.append(f"rank {rank} (pid {proc.pid}, host {host}) {_exit_text(proc.returncode)}")
    return lost


def kill_children(trainer, wait_s: float = 5.0) -> None:
    """SIGKILL the ranks Lightning's launcher started here (those still running) and reap them."""
    procs = getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or []
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(timeout=wait_s)
        except Exception:  # noqa: BLE001 (a child that cannot be reaped must not hide the run's own error)
            pass


def wait_children(trainer, timeout_s: float) -> None:
    """After a finished run: give the launched ranks ``timeout_s`` to exit, then kill the rest."""
    procs = getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or []
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001
            pass
    kill_children(trainer)


class _Watch(threading.Thread):
    """A daemon thread calling ``check`` every POLL_S until stopped; when ``check`` returns a
    reason, ``record(reason)`` runs (returning the record's path) and the process ends at once with status 1."""

    def __init__(self, name: str, check: Callable[[], str | None], record: Callable[[str], str | None],
                 on_fault: Callable[[], None] | None = None) -> None:
        super().__init__(daemon=True, name=name)
        self._check, self._record, self._on_fault = check, record, on_fault
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(POLL_S):
            reason = self._check()
            if reason and not self._stop_event.is_set():
                print(f"cifar-bench: failed: {reason} (ending this rank, pid {os.getpid()})", flush=True)
                try:
                    if path := self._record(reason):  # the record's path (a first writer's, if another was first)
                        print(f"result: {path}", flush=True)
                finally:
                    if self._on_fault:
                        self._on_fault()
                    os._exit(1)  # ExitCode.FAILED; the main thread may be stuck in a collective


def lost_launcher(wait_s: float = 0.0) -> str | None:
    """In a rank started by Lightning's launcher: the text naming rank 0 when it is gone (this process was
    re-parented), else None. ``wait_s``: how long to wait for that (s), for a rank whose collective failed
    a moment before the kernel re-parented it."""
    if not is_launched_child():
        return None
    launcher, deadline = int(os.environ[LAUNCHER_ENV]), time.monotonic() + wait_s
    while os.getppid() == launcher:
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
    return f"rank 0 (pid {launcher}, host {socket.gethostname()}, the launcher of this node's ranks) died"


def parent_watch(record: Callable[[str], str | None]) -> _Watch:
    """In a rank started by Lightning's launcher: end it (after ``record``) when rank 0, its parent, is gone."""
    watch = _Watch("bench-parent-watch", lost_launcher, record)
    watch.start()
    return watch


def child_watch(trainer, record: Callable[[str], str | None]) -> _Watch:
    """In rank 0 with Lightning's launcher: end the run (after ``record``) when a child rank exits non-zero."""

    def check() -> str | None:
        if getattr(trainer, "received_sigterm", False):  # the children stop on rank 0's SIGTERM too
            return None
        lost = lost_children(trainer)
        return "lost " + "; ".join(lost) if lost else None

    watch = _Watch("bench-child-watch", check, record, on_fault=lambda: kill_children(trainer, wait_s=2.0))
    watch.start()
    return watch


def error_text(err: BaseException, limit: int = 400) -> str:
    """``"Type: message"`` cut to its first paragraph and ``limit`` characters: gloo's and NCCL's errors
    carry a C++ call stack after a blank line ("At: ..."), 50 lines that would bury the reason."""
    text = str(err).strip().split("\n\n", 1)[0].strip()
    text = text if len(text) <= limit else text[:limit - 3].rstrip() + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def explain(err: BaseException, config: BenchConfig) -> str | None:
    """The likely cause and fix of a distributed failure, from the error's text; None when unknown."""
    text = f"{type(err).__name__}: {err}"
    if "waiting for clients" in text or "Timed out" in text or "timed out" in text:
        return (f"a rank did not join or answer within --pg-timeout-s {config.pg_timeout_s:g} s: check that all "
                f"{config.world_size} ranks were started (under Slurm: srun with --ntasks-per-node equal to --devices "
                f"and -N equal to --num-nodes), that they reach MASTER_ADDR:MASTER_PORT, and the logs of the others")
    if "closed by peer" in text or "reset by peer" in text:
        return "another rank died or lost its connection: see its log (under srun: the step output names the task)"
    if "EADDRINUSE" in text or "address already in use" in text:
        return "MASTER_PORT is taken by another process on rank 0's host: unset it or choose a free port"
    return None


class _NoWatch:
    def stop(self) -> None:
        pass


def watch(trainer, record: Callable[[str], str | None]) -> _Watch | _NoWatch:
    """The watcher this process needs: :func:`parent_watch` in a rank Lightning's launcher started,
    :func:`child_watch` in the rank 0 that starts them, none otherwise (one process, or srun)."""
    if is_launched_child():
        return parent_watch(record)
    if os.environ.get(LAUNCHER_ENV) == str(os.getpid()):
        return child_watch(trainer, record)
    return _NoWatch()
