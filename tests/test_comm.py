"""Communication facts: NCCL's log lines parsed (literal lines in NCCL's formats), env handling."""

from __future__ import annotations

import os

from bench.core.config import make_config
from bench.run import comm

# Lines in the formats of NCCL 2.2x INFO output (src/init.cc "Using network %s", src/transport.cc
# "Channel %02d/%d : %d[%d] -> %d[%d] via %s"), as written with NCCL_DEBUG_FILE.
IB_LOG = """\
node1:1234:1234 [0] NCCL INFO Bootstrap : Using ib0:10.0.0.1<0>
node1:1234:1234 [0] NCCL INFO NCCL version 2.27.5+cuda12.9
node1:1234:1301 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB ; OOB ib0:10.0.0.1<0>
node1:1234:1301 [0] NCCL INFO Using network IB
node1:1234:1301 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read
node1:1234:1301 [0] NCCL INFO Channel 01/0 : 3[1] -> 0[0] [receive] via NET/IB/0
node1:1234:1301 [0] NCCL INFO Channel 01/0 : 0[0] -> 2[0] [send] via NET/IB/0
"""
SOCKET_LOG = """\
node2:99:99 [1] NCCL INFO NET/IB : No device found.
node2:99:99 [1] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.2<0>
node2:99:99 [1] NCCL INFO Using network Socket
node2:99:140 [1] NCCL INFO Channel 00/0 : 2[0] -> 3[1] via SHM/direct/direct
node2:99:140 [1] NCCL INFO Channel 00/0 : 3[1] -> 0[0] [send] via NET/Socket/0
"""


def test_parse_infiniband_log():
    facts = comm.parse_nccl_log(IB_LOG)
    assert facts == {"network": "IB", "channels": ["NET/IB", "P2P/CUMEM"], "nccl_version": "2.27.5+cuda12.9"}


def test_parse_socket_fallback_log():
    facts = comm.parse_nccl_log(SOCKET_LOG)
    assert facts["network"] == "Socket" and facts["channels"] == ["NET/Socket", "SHM/direct"]
    assert facts["nccl_version"] is None
    assert comm.parse_nccl_log("") == {"network": None, "channels": [], "nccl_version": None}


def test_communication_record_from_ranks():
    ib, sock = comm.parse_nccl_log(IB_LOG), comm.parse_nccl_log(SOCKET_LOG)
    rec = comm.communication("nccl", [ib, sock], {"NCCL_IB_HCA": "mlx5"}, "hook")
    assert rec["network"] == "IB,Socket"  # ranks disagreeing is worth seeing
    assert rec["channels"] == ["NET/IB", "NET/Socket", "P2P/CUMEM", "SHM/direct"]
    assert rec["nccl_version_logged"] == "2.27.5+cuda12.9" and rec["comm_env"] == {"NCCL_IB_HCA": "mlx5"}
    assert comm.communication("gloo", [None, None], {}, None)["network"] == "TCP (gloo)"
    assert comm.communication("nccl", [None], {}, None)["network"] is None  # unknown, not guessed


def test_nccl_log_requested_only_for_gpu_ddp_and_never_over_the_users_setting(tmp_path, monkeypatch):
    for key in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE", comm.LOG_MARKER):
        monkeypatch.delenv(key, raising=False)
    cpu = make_config("smoke", case="ddp", devices=2, data="synthetic", out_dir=str(tmp_path))
    assert comm.request_nccl_log(cpu, "r1") is None and "NCCL_DEBUG" not in os.environ
    gpu = make_config("smoke", case="ddp", devices=2, data="synthetic", out_dir=str(tmp_path), accelerator="gpu")
    monkeypatch.setenv("NCCL_DEBUG", "WARN")  # the user's choice wins
    assert comm.request_nccl_log(gpu, "r1") is None and os.environ["NCCL_DEBUG"] == "WARN"
    assert comm.user_comm_env() == {"NCCL_DEBUG": "WARN"}
    monkeypatch.delenv("NCCL_DEBUG")
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth0")
    folder = comm.request_nccl_log(gpu, "r1")
    assert folder == tmp_path / "nccl" / "r1" and folder.is_dir()
    assert os.environ["NCCL_DEBUG"] == "INFO" and os.environ["NCCL_DEBUG_FILE"].endswith(".%p.log")
    assert comm.user_comm_env() == {"NCCL_SOCKET_IFNAME": "eth0"}  # ours are not reported as the user's
