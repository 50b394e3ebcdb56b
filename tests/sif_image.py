"""The SIF every image test of a pytest session shares, built once (``make image``) or named by CIFAR_TEST_SIF.

The fixtures ``sif`` and ``base_archive`` are registered in tests/conftest.py (and only there: a
session-scoped fixture imported into two test modules would be two fixtures, and two builds of 3.5 GB).
Users: tests/test_apptainer.py (the image as users run it), tests/test_slurm_image.py (every rank of
``sbatch slurm/suite.sh`` inside it on the local cluster).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_containers import ENGINE, REPO, _base_image, _engine_or_fail

# The SIF's compression in CI: zstd level 3 builds several times faster than Apptainer's default gzip.
MKSQUASHFS_ARGS = "-comp zstd -Xcompression-level 3"
BUILD_TIMEOUT_S = 40 * 60


def _apptainer_or_fail() -> str:
    """`apptainer --version`; skip outside CI where there is none, fail in CI (CI=true)."""
    problem = None
    if shutil.which("apptainer") is None:
        problem = "apptainer is not installed (make container-tools installs it)"
    else:
        proc = subprocess.run(["apptainer", "--version"], capture_output=True, text=True, timeout=120)
        problem = None if proc.returncode == 0 else f"`apptainer --version` failed: {proc.stderr.strip()[-500:]}"
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"CI needs Apptainer: {problem}")
    if problem:
        pytest.skip(problem)
    return proc.stdout.strip()


def _build_env(base_archive: Path) -> dict:
    # --notest: the build's own run of %test is the self-test test_apptainer_test runs (as a user).
    env = {**os.environ, "BASE_ARCHIVE": str(base_archive), "MKSQUASHFS_ARGS": MKSQUASHFS_ARGS,
           "APPTAINER_BUILD_FLAGS": "--notest"}
    ca = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(ca).is_file():  # pip in %post downloads through this machine's TLS proxy
        env["APPTAINER_BUILD_FLAGS"] += f" --bind {ca}:/etc/ssl/certs/ca-certificates.crt"
    return env


@pytest.fixture(scope="session")
def base_archive(tmp_path_factory) -> Path:
    """The stand-in base as the docker-archive apptainer.def's derived header names."""
    _engine_or_fail()
    archive = tmp_path_factory.mktemp("base") / "base.docker.tar"
    subprocess.run([*ENGINE, "save", "--format", "docker-archive", "-o", str(archive), _base_image()],
                   check=True, capture_output=True, timeout=600)
    return archive


@pytest.fixture(scope="session")
def sif(request) -> dict:
    """cifar.sif from the real apptainer.def (`make image`), built once per session; its identity.
    CIFAR_TEST_SIF=PATH: use that SIF (made by `make image` from this commit) instead of building."""
    version = _apptainer_or_fail()
    given = os.environ.get("CIFAR_TEST_SIF")
    # Not under pytest's tmp_path (root's, mode 0700): the unprivileged user must reach the file.
    folder = Path(tempfile.mkdtemp(prefix="cifar-apptainer-sif-"))
    folder.chmod(0o755)
    out = Path(given) if given else folder / "cifar.sif"
    start = time.monotonic()
    if not given:
        proc = subprocess.run(["make", "-s", "image", f"SIF={out}"], cwd=REPO,
                              env=_build_env(request.getfixturevalue("base_archive")),
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    seconds = time.monotonic() - start
    ident = subprocess.run(["bash", str(REPO / "container" / "image-id.sh"), str(out)], capture_output=True,
                           text=True, check=True, timeout=120).stdout.strip()
    print(f"{version}: built {out.name} in {seconds:.0f} s, {out.stat().st_size / 1e9:.2f} GB, {ident}")
    inspect = subprocess.run(["apptainer", "inspect", "--json", "--labels", str(out)], capture_output=True, text=True,
                             check=True, timeout=120)
    commit = json.loads(inspect.stdout)["data"]["attributes"]["labels"]["org.opencontainers.image.revision"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert commit.removesuffix("-dirty") == head or given, f"the image's commit {commit} is not this checkout's {head}"
    yield {"path": out, "id": ident, "commit": commit}
    shutil.rmtree(folder, ignore_errors=True)  # the SIF, several GB: one per session, nothing left behind
