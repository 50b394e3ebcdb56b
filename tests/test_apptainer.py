"""The shipping form: cifar.sif built from the real apptainer.def with the real Apptainer, and run.

One SIF per session (fixture ``sif``, tests/sif_image.py through tests/conftest.py, shared with the
Slurm test of the image, tests/test_slurm_image.py): `make image` on the stand-in base (container/standin-base.sh,
saved as a docker-archive; build-image.sh derives apptainer.def's header for it), then every test
runs that file as users do: `apptainer test`, `apptainer exec --containall` of the suite as an
unprivileged user with the data bound read-only and results in a bound host folder, `apptainer
run`. Apptainer is the site's where there is one, else Debian's in a tree (`make container-tools`,
container/apptainer-install.sh). In CI (CI=true) a missing Apptainer fails these tests.
Facts: ../shared/notes/apptainer-here.md; what they prove: docs/containers.md.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.test_containers import DATA, REPO, apptainer_def, locked_version, suite_results

BUILD = REPO / "container" / "build-image.sh"
USER = "cifarbench"  # the unprivileged user the images run as (made here where missing)
RUN_TIMEOUT_S = 15 * 60


@pytest.fixture(scope="session")
def user() -> pwd.struct_passwd:
    """An unprivileged user with a home (made here when missing: the test host is a CI machine)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        if os.getuid() != 0:
            pytest.skip(f"no user {USER} and not root to make one")
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True, timeout=60)
        return pwd.getpwnam(USER)


def apptainer_as(user: pwd.struct_passwd, *args: str, timeout: int = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`apptainer ARGS` as ``user``: this machine's wrapper enters its tree as root and then drops to
    the user (CIFAR_APPTAINER_USER); a site's apptainer is run through runuser."""
    wrapper = "apptainer-install.sh" in Path(shutil.which("apptainer")).read_text(errors="replace")[:4000]
    if wrapper:
        cmd, env = ["apptainer", *args], {**os.environ, "CIFAR_APPTAINER_USER": user.pw_name}
    else:
        cmd, env = ["runuser", "-u", user.pw_name, "--", "apptainer", *args], dict(os.environ)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd="/tmp")


@pytest.fixture
def results(user) -> Path:
    """A host folder the user owns, for the results (pytest's tmp_path is root's, mode 0700)."""
    out = Path(tempfile.mkdtemp(prefix="cifar-apptainer-results-"))
    os.chown(out, user.pw_uid, user.pw_gid)
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_the_derived_header_is_apptainer_def_with_only_bootstrap_and_from_replaced(tmp_path):
    proc = subprocess.run(["bash", str(BUILD), "derived-def", "/x/base.tar"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    original, derived = (REPO / "apptainer.def").read_text().splitlines(), proc.stdout.splitlines()
    changed = [(a, b) for a, b in zip(original, derived) if a != b]
    header, _ = apptainer_def()
    assert len(original) == len(derived) and changed == [
        (f"Bootstrap: {header['Bootstrap']}", "Bootstrap: docker-archive"), (f"From: {header['From']}", "From: /x/base.tar")]


@pytest.mark.container
def test_apptainer_test_runs_the_selftest_with_a_compiler_for_torch_compile(sif, user):
    # As users run it: no --containall, whose /tmp is Apptainer's 64 MB session tmpfs (`sessiondir max
    # size`), too small for inductor's precompiled header ("No space left on device"; docs/containers.md).
    proc = apptainer_as(user, "test", "--env", f"BENCH_IMAGE_ID={sif['id']}", str(sif["path"]))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "selftest: ok" in out and f"BENCH_IMAGE_ID={sif['id']}" in out, out[-3000:]
    assert "torch.compile (inductor" in out, out[-3000:]
    assert f"torch {locked_version('torch')}" in out


@pytest.mark.container
def test_suite_runs_with_apptainer_exec_as_a_user_and_results_come_back(sif, user, results):
    if not DATA.is_file():
        pytest.fail(f"{DATA} is missing: the image tests run the suite on the real images")
    out, cache = results / "runs", results / "cache"
    for d in (out, cache):
        d.mkdir()
        os.chown(d, user.pw_uid, user.pw_gid)
    # The decoded data cache on a bound host folder (BENCH_CACHE, as `make data` stages it): under
    # --containall, HOME and /tmp are Apptainer's 64 MB session tmpfs, too small for it.
    proc = apptainer_as(user, "exec", "--containall", "--bind", f"{DATA.parent}:/data:ro", "--bind", f"{out}:/results",
                        "--bind", f"{cache}:/cache", "--env", "BENCH_CACHE=/cache",
                        "--env", f"BENCH_DATA=/data/{DATA.name}", "--env", f"BENCH_IMAGE_ID={sif['id']}",
                        str(sif["path"]), "python", "-m", "pytest", "/opt/cifar-bench/suite", "-p", "no:cacheprovider",
                        "--bench-preset", "smoke", "--bench-out", "/results", "--benchmark-json", "/results/suite.json")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    for result in suite_results(out):
        env = result["environment"]
        assert env["container_runtime"] == "apptainer" and env["container_image_id"] == sif["id"], env
        assert env["git_commit"] == sif["commit"], env["git_commit"]  # BENCH_GIT_COMMIT, baked in at build
    assert all(p.stat().st_uid == user.pw_uid for p in out.rglob("*.json")), "results not written as the user"


@pytest.mark.container
def test_apptainer_run_does_what_the_runscript_says(sif, user, results):
    out = results
    proc = apptainer_as(user, "run", "--containall", "--bind", f"{out}:/results", "--env", "BENCH_OUT=/results",
                        "--env", "BENCH_DATA=synthetic", str(sif["path"]), "--bench-preset", "smoke", "-k", "baseline")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    suite = json.loads((out / "suite.json").read_text())
    assert [b["name"].split("[")[0] for b in suite["benchmarks"]] == ["test_baseline"]
    [result] = [json.loads(p.read_text()) for p in out.rglob("*.json") if p.name != "suite.json"]
    assert result["status"] == "ok" and result["case"] == "baseline"


@pytest.mark.container
def test_a_missing_data_bind_gives_the_runs_own_error(sif, user, results):
    # The data folder was not bound: BENCH_DATA names a path that is not in the container.
    out = results
    proc = apptainer_as(user, "run", "--containall", "--bind", f"{out}:/results", "--env", "BENCH_OUT=/results",
                        "--env", f"BENCH_DATA=/data/{DATA.name}", str(sif["path"]), "--bench-preset", "smoke",
                        "-k", "baseline", timeout=5 * 60)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-4000:]  # ExitCode.BAD_INPUT, the run's own status
    assert f"data path /data/{DATA.name} does not exist" in log and "Traceback" not in log, log[-4000:]
    assert list(out.rglob("*.json")) == [], "a run stopped for bad input wrote a result"


@pytest.mark.container
def test_a_bind_from_any_top_level_folder_reaches_the_container(sif, user):
    # CI clones to /check/work/main, and ../shared/data was outside the wrapper's fixed folders
    # (/work, /tmp, ...): the data bind failed with "mount source ... doesn't exist".
    if "apptainer-install.sh" not in Path(shutil.which("apptainer")).read_text(errors="replace")[:4000]:
        pytest.skip("a site's apptainer: binds are the site's")
    top = Path(f"/cifar-bench-bind-{os.getpid()}")
    try:
        (top / "work" / "shared" / "data").mkdir(parents=True)
        top.chmod(0o755)
        for folder in (top / "work", top / "work" / "shared", top / "work" / "shared" / "data"):
            folder.chmod(0o755)
        (top / "work" / "shared" / "data" / "probe.txt").write_text("bound\n")
        proc = apptainer_as(user, "exec", "--containall", "--bind", f"{top}/work/shared/data:/data:ro",
                            str(sif["path"]), "cat", "/data/probe.txt", timeout=300)
        assert proc.returncode == 0 and proc.stdout == "bound\n", proc.stderr[-2000:]
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_image_id_given_by_the_host_is_recorded(monkeypatch):
    from bench.measure.environment import container_facts

    monkeypatch.setenv("BENCH_IMAGE_ID", "sif:dac897b4-1e86-47cb-9aea-308fcf338bcf")
    assert container_facts()["container_image_id"] == "sif:dac897b4-1e86-47cb-9aea-308fcf338bcf"
    monkeypatch.setenv("BENCH_IMAGE_ID", "")
    assert container_facts()["container_image_id"] is None


def test_image_id_digest_and_a_missing_file(tmp_path):
    fake = tmp_path / "x.sif"
    fake.write_bytes(b"abc")
    script = str(REPO / "container" / "image-id.sh")
    digest = subprocess.run(["bash", script, "--digest", str(fake)], capture_output=True, text=True, timeout=60)
    assert digest.stdout.strip() == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    missing = subprocess.run(["bash", script, str(tmp_path / "none.sif")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "is not a file" in missing.stderr
    if shutil.which("apptainer"):  # a file that is no SIF has no header ID
        bad = subprocess.run(["bash", script, str(fake)], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "no SIF header ID" in bad.stderr, bad.stderr
