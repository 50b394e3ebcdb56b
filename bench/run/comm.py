"""Communication facts of DDP runs: backend, NCCL version, the transport NCCL really used, env settings.

NCCL picks its network at start-up and falls back to TCP sockets without an error when it
cannot use InfiniBand (PyTorch base images often lack rdma-core). The only reliable record of its
choice is its own log, so for NCCL runs where the user has not set ``NCCL_DEBUG`` this module
asks NCCL for INFO lines of the INIT and NET subsystems in a file per process
(``<out>/nccl/<run_id>/<host>.<pid>.log``, via ``NCCL_DEBUG_FILE``) and reads from it. The host
part is written into the variable by each process itself, in full: NCCL's own ``%h`` is the
host name cut at the first dot (or $NCCL_HOSTID), which a reader cannot rebuild reliably; only
``%p`` (the pid) is left to NCCL, and the reader expands it from the variable it set.

* ``network``: ``INFO(NCCL_INIT, "Using network %s", ...)`` in NCCL's ``src/init.cc``: "IB" or
  "Socket" (or a plugin's name), the network for traffic between nodes;
* ``channels``: the transports of the ring/tree channels, from "Channel 00/0 : 0[0] -> 1[1] via
  P2P/CUMEM/read" lines (``src/transport.cc``): P2P, SHM (inside a node), NET/IB, NET/Socket.

Gloo (CPU runs) always uses TCP. The NCCL_*/GLOO_* variables recorded are the user's, read before
this module adds its own.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

from bench.core.config import BenchConfig

LOG_MARKER = "BENCH_NCCL_LOG_DIR"  # set when the NCCL_DEBUG* variables are ours, not the user's
_OURS = ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE")
_NETWORK = re.compile(r"NCCL INFO Using network (\S+)")
_CHANNEL = re.compile(r"NCCL INFO Channel \d+/\d+ : .* via ([A-Za-z0-9]+(?:/[A-Za-z]+)?)")
_VERSION = re.compile(r"NCCL version (\S+)")


def user_comm_env() -> dict[str, str]:
    """The NCCL_*/GLOO_* environment variables set by the user (not those set by :func:`request_nccl_log`)."""
    ours = _OURS if os.environ.get(LOG_MARKER) else ()
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(("NCCL_", "GLOO_")) and k not in ours}


def request_nccl_log(config: BenchConfig, run_id: str) -> Path | None:
    """Ask NCCL (through the environment, before any communicator exists) to log its transport choice.

    Returns the log folder, or None when NCCL is not used or the user set NCCL_DEBUG (their choice wins).
    Processes started later (Lightning's launcher) inherit the variables.
    """
    if config.case != "ddp" or config.accelerator != "gpu":
        return None
    if "NCCL_DEBUG" in os.environ and not os.environ.get(LOG_MARKER):
        return None
    folder = Path(config.out_dir) / "nccl" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    # Every process sets this itself (srun tasks and Lightning's launched ranks both run this before
    # NCCL starts), so the host is its own; NCCL expands %p to the pid. Not %h: see the module docstring.
    os.environ.update({LOG_MARKER: str(folder), "NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET",
                       "NCCL_DEBUG_FILE": str(folder / f"{_file_safe(socket.gethostname())}.%p.log")})
    return folder


def _file_safe(host: str) -> str:
    """``host`` with '%' (NCCL's escape character) and '/' replaced, usable in NCCL_DEBUG_FILE."""
    return host.replace("%", "_").replace("/", "_")


def own_log_path() -> Path | None:
    """The file NCCL writes this process's log to: $NCCL_DEBUG_FILE with %p expanded (None unless ours)."""
    pattern = os.environ.get("NCCL_DEBUG_FILE") if os.environ.get(LOG_MARKER) else None
    return Path(pattern.replace("%p", str(os.getpid()))) if pattern else None


def parse_nccl_log(text: str) -> dict[str, Any]:
    """Transport facts from NCCL INFO lines: ``{"network": str|None, "channels": [..], "nccl_version": str|None}``.

    ``channels`` lists each distinct transport once, sorted (e.g. ``["NET/IB", "P2P/CUMEM"]``).
    """
    network = _NETWORK.search(text)
    version = _VERSION.search(text)
    channels = sorted({m.group(1) for m in _CHANNEL.finditer(text)})
    return {"network": network.group(1) if network else None, "channels": channels,
            "nccl_version": version.group(1).rstrip(",") if version else None}


def own_nccl_facts() -> dict[str, Any] | None:
    """This process's transport facts from its NCCL log (None when no log was requested or written)."""
    path = own_log_path()
    if path is None:
        return None
    try:
        return {**parse_nccl_log(path.read_text(errors="replace")), "log": str(path)}
    except OSError:
        return None


def communication(backend: str | None, per_rank: list[dict[str, Any] | None], user_env: dict[str, str],
                  comm_hook: str | None) -> dict[str, Any]:
    """The ``world.communication`` record of a run from every rank's NCCL facts (pure).

    Args:
        backend: "nccl", "gloo" or None (no process group).
        per_rank: :func:`own_nccl_facts` of each global rank (None entries where unknown).
        user_env: :func:`user_comm_env` of rank 0. comm_hook: the DDP communication hook installed.
    """
    known = [f for f in per_rank if f]
    if backend == "gloo":
        network = "TCP (gloo)"
    elif known:
        network = ",".join(sorted({str(f["network"]) for f in known}))
    else:
        network = None  # NCCL_DEBUG set by the user, or no process group: not readable here
    return {"backend": backend, "network": network,
            "channels": sorted({c for f in known for c in f["channels"]}) or None,
            "nccl_version_logged": next((f["nccl_version"] for f in known if f.get("nccl_version")), None),
            "nccl_logs": [f.get("log") for f in known] or None,
            "comm_env": user_env, "allreduce_hook": comm_hook}
