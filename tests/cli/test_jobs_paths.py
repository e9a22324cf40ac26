"""`baton jobs` (and the other commands that import jobs) work from any directory."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

from scheduler.backends import from_url
from tests.harness.cli import baton

JOBS = """
from scheduler import singleton_job

@singleton_job(every="5s", name="paths.tick")
def tick(ctx): ...
"""


def make_project(tmp_path: Path) -> Path:
    """A project directory with a jobs module, a config naming it and an existing database."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pathjobs.py").write_text(textwrap.dedent(JOBS))
    db = project / "baton.db"
    (project / "baton.yaml").write_text(f"backend: sqlite:///{db}\njobs: [pathjobs]\n")
    from_url(f"sqlite:///{db}").check()  # as a replica would have created it
    (tmp_path / "elsewhere").mkdir()
    return project


def names(result: subprocess.CompletedProcess[str]) -> set[str]:
    assert result.returncode == 0, result.stderr
    return {item["name"] for item in json.loads(result.stdout)}


def test_jobs_with_config_from_another_directory(tmp_path: Path) -> None:
    """--config elsewhere: its directory is searched for the jobs modules it names."""
    project = make_project(tmp_path)
    config = str(project / "baton.yaml")
    result = baton("jobs", "--config", config, "--json", cwd=tmp_path / "elsewhere")
    assert names(result) == {"paths.tick"}
    via_env = baton("jobs", "--json", cwd=tmp_path / "elsewhere", env={"BATON_CONFIG": config})
    assert names(via_env) == {"paths.tick"}


def test_jobs_given_as_a_file_path_from_another_directory(tmp_path: Path) -> None:
    """--jobs path/to/module.py imports that file, from whatever directory baton runs in."""
    project = make_project(tmp_path)
    backend = f"sqlite:///{project / 'baton.db'}"
    for jobs in (str(project / "pathjobs.py"), "../project/pathjobs.py"):
        result = baton(
            "jobs", "--jobs", jobs, "--backend", backend, "--json", cwd=tmp_path / "elsewhere"
        )
        assert names(result) == {"paths.tick"}


def test_jobs_given_as_a_missing_path_is_one_line(tmp_path: Path) -> None:
    """A --jobs path that is neither a .py file nor a package directory: exit 2, one line."""
    project = make_project(tmp_path)
    backend = f"sqlite:///{project / 'baton.db'}"
    result = baton("jobs", "--jobs", "nope/x.py", "--backend", backend, cwd=tmp_path / "elsewhere")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "'jobs'" in result.stderr
