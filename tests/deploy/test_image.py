"""The container image, built from the repository's Dockerfile and run for real.

The image is built once per test run with podman (tests/deploy/image.py: only PYTHON_IMAGE
is replaced, by a locally built Debian base) and run the way the chart runs it: the
image's ENTRYPOINT, ENV, WORKDIR and USER, a read-only root with tmpfs at /tmp and
/app/.baton, the chart's rendered ConfigMap at /etc/baton, against a real Redis.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import stat
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from scheduler.backends import from_url
from scheduler.leadership.lease import LeaseRecord
from tests.deploy.chart import Rendered, render
from tests.deploy.image import (
    Bind,
    Container,
    ImageConfig,
    Tmpfs,
    build_image,
    ensure_base_image,
    mounted,
    require_tools,
)
from tests.harness.postgresql_server import PostgresServer
from tests.harness.redis_server import RedisServer
from tests.harness.replicas import wait_for

#: The example heartbeat's period, and its ledger inside the image (a shared volume).
TICK = timedelta(seconds=2)
LEDGER_DIR = "/mnt"
#: The chart's lease_ttl is 10 s: a kill -9 leaves the lease to expire on the server.
FAILOVER_TIMEOUT = 30.0
#: The files `groupadd` and `useradd` change (each with its "-" backup).
USER_DB = ("passwd", "group", "shadow", "gshadow")


@dataclass(frozen=True)
class Built:
    image: ImageConfig
    rootfs: Path
    base_seconds: float


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    """The image built from the current tree (base cached per machine), mounted."""
    require_tools()
    started = time.monotonic()
    base = ensure_base_image()
    base_seconds = time.monotonic() - started
    # No layer cache: podman does not key the install step on the wheels it bind-mounts
    # (a cached rebuild kept the previous Baton), and a fresh machine builds cold anyway.
    image = build_image(base, no_cache=True)
    print(
        f"\n[deploy] base {base} ready in {base_seconds:.1f} s; image built in "
        f"{image.build_seconds:.1f} s; {image.size / 1e6:.1f} MB, Baton's layers "
        f"{image.own_size / 1e6:.1f} MB"
    )
    with mounted(image.ref) as rootfs:
        yield Built(image, rootfs, base_seconds)


def _chart(backend: str) -> Rendered:
    return render({"backend": {"url": backend}})


def _pod_env(rendered: Rendered, pod: str, backend: str) -> dict[str, str]:
    """The container's env as the kubelet would set it (the Secret and the pod name)."""
    env: dict[str, str] = {}
    for item in rendered.container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            env[item["name"]] = backend
        elif item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
            env[item["name"]] = pod
    return env


def _free_loopback(port: int) -> str:
    """A loopback address (127.x.y.z, a pod's own IP) where ``port`` is free."""
    for _ in range(100):
        address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.1"
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
        return address
    raise AssertionError(f"no loopback address with port {port} free")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


def _healthy(url: str) -> bool:
    return _get(url)[0] == 200


def _operator_view(probe: Container, expected: LeaseRecord) -> dict[str, Any]:
    """`baton leader` and `baton status` run from the image: both name ``expected``."""
    leader_out = probe.run(["leader", "--json"])
    status_out = probe.run(["status", "--json"])
    assert leader_out.returncode == 0, leader_out.stderr
    assert status_out.returncode == 0, status_out.stderr
    leader_doc = json.loads(leader_out.stdout)
    status_doc: dict[str, Any] = json.loads(status_out.stdout)
    assert leader_doc["leader"]["replica_id"] == status_doc["leader"] == expected.replica_id
    assert leader_doc["leader"]["token"] == status_doc["token"] == expected.token
    leaders = [r["replica_id"] for r in status_doc["replicas"] if r["leader"]]
    assert leaders == [expected.replica_id]
    return status_doc


def _uid_gid(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(line for line in status if line.startswith("Uid:")).split()[1:]
    gid = next(line for line in status if line.startswith("Gid:")).split()[1:]
    return int(uid[0]), int(gid[0])


@pytest.mark.timeout(900)
def test_image_builds_from_the_dockerfile_with_its_promised_config(built: Built) -> None:
    """The build succeeds; ENTRYPOINT baton, CMD run, UID 10001, /app, port 8080."""
    image = built.image
    assert image.entrypoint == ["baton"]
    assert image.cmd == ["run"]
    assert image.user == "10001:10001"
    assert image.workdir == "/app"
    assert image.exposed_ports == ["8080/tcp"]
    assert image.env["BATON_CONFIG"] == "/etc/baton/baton.yaml"
    assert image.env["PYTHONPATH"] == "/app"
    assert "BATON_BACKEND" not in image.env


@pytest.mark.timeout(900)
def test_three_replicas_from_the_image_fail_over_and_run_every_tick_once(
    built: Built, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Chart-shaped pods from the image: kill -9 the leader, the next leads, no tick lost."""
    backend = redis_server.url
    rendered = _chart(backend)
    port = int(rendered.container["ports"][0]["containerPort"])
    config_dir = tmp_path / "configmap"
    config_dir.mkdir()
    cluster = f"image-{os.getpid()}-{random.randint(0, 1 << 30)}"
    config = rendered.config_text.replace(
        f"cluster: {rendered.config['cluster']}", f"cluster: {cluster}"
    )
    assert f"cluster: {cluster}" in config, "the chart's cluster line moved"
    (config_dir / "baton.yaml").write_text(config)
    config_dir.chmod(0o755)
    ledger_dir = tmp_path / "ledger"  # a volume shared by the pods, outside the image
    ledger_dir.mkdir()
    os.chown(ledger_dir, 10001, 10001)
    ledger = ledger_dir / "ledger.jsonl"

    def container(pod: str, extra_env: dict[str, str]) -> Container:
        env = _pod_env(rendered, pod, backend) | extra_env
        return Container(
            rootfs=built.rootfs,
            image=built.image,
            env=env,
            mounts=[
                Bind(config_dir, "/etc/baton", read_only=True),
                Tmpfs("/tmp", 10001, 10001, mode="1777"),
                Tmpfs("/app/.baton", 10001, 10001),
                Bind(ledger_dir, LEDGER_DIR),
            ],
        )

    pods: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    for index in range(3):
        pod = f"baton-{index}"
        address = _free_loopback(port)
        log = tmp_path / f"{pod}.log"
        argv = container(
            pod,
            {
                "BATON_HTTP_HOST": address,
                "BATON_DEMO_LEDGER": f"{LEDGER_DIR}/ledger.jsonl",
            },
        ).argv()  # the image's CMD: run, as the chart's args
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        pods[pod] = (proc, address, log)

    observer = from_url(backend)

    def logs() -> str:
        return "\n".join(f"--- {pod}\n{log.read_text()[-3000:]}" for pod, (*_, log) in pods.items())

    def leader(not_token: int | None = None) -> LeaseRecord:
        def found() -> LeaseRecord | None:
            record = observer.read(cluster)
            return record if record and record.token != not_token else None

        try:
            return wait_for(found, FAILOVER_TIMEOUT, "a leader")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from exc

    def runs() -> list[dict[str, Any]]:
        if not ledger.exists():
            return []
        return [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]

    try:
        first = leader()
        for pod, (proc, _, _) in pods.items():  # after the exec chain: baton itself
            assert proc.poll() is None, f"{pod} exited\n{logs()}"
            assert _uid_gid(proc.pid) == (10001, 10001), f"{pod} does not run as 10001"
        # Every pod answers its probes on the chart's port.
        for pod, (_, address, _) in pods.items():
            try:
                wait_for(
                    partial(_healthy, f"http://{address}:{port}/healthz"),
                    30,
                    f"{pod} /healthz on port {port}",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{logs()}") from exc
        wait_for(lambda: len(runs()) >= 2, 30, "two heartbeat ticks in the ledger")
        # `baton leader` and `baton status` from the image agree with each other.
        probe = container("operator", {})
        status_doc = _operator_view(probe, first)
        assert sorted(r["replica_id"] for r in status_doc["replicas"]) == sorted(pods)

        victim, _, _ = pods[first.replica_id]
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        second = leader(not_token=first.token)
        failover = time.monotonic() - killed_at
        assert second.replica_id != first.replica_id
        assert second.token > first.token
        print(f"\n[deploy] kill -9 -> new leader from the image in {failover:.2f} s")
        after = len(runs())
        wait_for(lambda: len(runs()) >= after + 3, 30, "ticks under the new leader")
        _operator_view(probe, second)
        for proc, _, _ in pods.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, _ in pods.values():
            proc.wait(timeout=60)
    finally:
        for proc, _, _ in pods.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        observer.close()

    counts = Counter(run["tick"] for run in runs())
    ticks = sorted(datetime.fromisoformat(tick) for tick in counts)
    expected = []
    tick = ticks[0]
    while tick <= ticks[-1]:
        expected.append(tick.isoformat())
        tick += TICK
    assert {t for t, c in counts.items() if c > 1} == set(), "ticks ran twice"
    assert [t for t in expected if t not in counts] == [], "ticks never ran"
    assert {run["replica"] for run in runs()} >= {first.replica_id, second.replica_id}


@pytest.mark.timeout(900)
def test_a_pod_from_the_image_leads_on_postgresql(
    built: Built, postgresql_server: PostgresServer, tmp_path: Path
) -> None:
    """The image carries the PostgreSQL driver: a chart-shaped pod on a postgresql://
    backend creates Baton's schema and leads, and `baton leader` from the image names it."""
    backend = postgresql_server.url(schema=f"image_{os.getpid()}")
    rendered = _chart(backend)
    cluster = f"image-pg-{os.getpid()}-{random.randint(0, 1 << 30)}"
    config_dir = tmp_path / "configmap"
    config_dir.mkdir()
    (config_dir / "baton.yaml").write_text(
        rendered.config_text.replace(
            f"cluster: {rendered.config['cluster']}", f"cluster: {cluster}"
        )
    )
    config_dir.chmod(0o755)

    def container(pod: str, extra_env: dict[str, str]) -> Container:
        return Container(
            rootfs=built.rootfs,
            image=built.image,
            env=_pod_env(rendered, pod, backend) | extra_env,
            mounts=[
                Bind(config_dir, "/etc/baton", read_only=True),
                Tmpfs("/tmp", 10001, 10001, mode="1777"),
                Tmpfs("/app/.baton", 10001, 10001),
            ],
        )

    port = int(rendered.container["ports"][0]["containerPort"])
    log = tmp_path / "pod.log"
    argv = container("baton-pg-0", {"BATON_HTTP_HOST": _free_loopback(port)}).argv()
    observer = from_url(backend)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            record = wait_for(lambda: observer.read(cluster), FAILOVER_TIMEOUT, "a leader")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from exc
        assert record.replica_id == "baton-pg-0"
        shown = container("operator", {}).run(["leader", "--json"])
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["leader"]["token"] == record.token
        assert postgresql_server.password not in shown.stdout + shown.stderr
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        observer.close()


def _baton_files(built: Built) -> list[str]:
    """Paths Baton's layers add or change (``podman image diff`` against the base)."""
    output = subprocess.run(
        ["podman", "image", "diff", "--format", "json", built.image.ref, built.image.base],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    doc = json.loads(output)
    return sorted(set(doc.get("added", []) + doc.get("changed", [])))


def _console_scripts(site_packages: Path) -> list[str]:
    """The console scripts the installed distributions declare (their entry_points.txt)."""
    names: list[str] = []
    for entry_points in site_packages.glob("*.dist-info/entry_points.txt"):
        section = ""
        for line in entry_points.read_text().splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[console_scripts]" and "=" in line:
                names.append(line.split("=", 1)[0].strip())
    return names


@pytest.mark.timeout(900)
def test_image_holds_no_build_tools_wheels_caches_secrets_or_tests(built: Built) -> None:
    """Nothing from the builder, the context's tests or any cache reaches the image."""
    root = built.rootfs
    site = "/opt/venv/lib/python3.11/site-packages/"
    # No compiler or build tool (apt-get and pip are in every Debian-based Python image).
    for tool in ("gcc", "cc", "g++", "make", "ld", "as", "git"):
        found = [d for d in ("usr/bin", "bin", "usr/local/bin") if (root / d / tool).exists()]
        assert not found, f"build tool {tool} in the image: {found}"
    assert not (root / "usr/include/python3.11/Python.h").exists(), "Python headers"
    offenders: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = "/" + os.path.relpath(dirpath, root)
        for name in filenames:
            path = f"{rel.rstrip('/')}/{name}"
            if name.endswith((".whl", ".pem", ".key", ".deb")) or name in (
                ".netrc",
                ".env",
                "id_rsa",
                "id_ed25519",
                "pip.conf",
            ):
                offenders.append(path)
        for name in dirnames:
            path = f"{rel.rstrip('/')}/{name}"
            if name in (".cache", ".git", "wheels", ".pytest_cache", ".mypy_cache", ".venv"):
                offenders.append(path)
    # CA bundles are public certificates: the base's, its OpenSSL link, pip's certifi.
    public_certs = ("/etc/ssl/certs/", "/usr/lib/ssl/", "/usr/share/ca-certificates/", site)
    assert [p for p in offenders if not (p.endswith(".pem") and p.startswith(public_certs))] == []
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists", "root/.cache", "app/.cache"):
        directory = root / cache
        leftovers = [p.name for p in directory.iterdir()] if directory.is_dir() else []
        assert [p for p in leftovers if p not in ("partial", "lock")] == [], cache
    # Baton's own layers: the installed packages, the example jobs, the defaults, the user.
    added = _baton_files(built)
    assert {"/opt/venv/bin/baton", "/app/jobs/examples.py", "/etc/baton/baton.yaml"} <= set(added)
    # The command-line tools the installed dependencies declare (httpx's, idna's): pip makes
    # them with the packages; nothing else may appear in the venv's bin.
    tools = tuple(f"/opt/venv/bin/{name}" for name in _console_scripts(root / site.lstrip("/")))
    allowed = ("/app", "/etc/baton", "/opt/venv/bin/baton", site, *tools)
    ancestors = {str(p) for prefix in allowed for p in (Path(prefix), *Path(prefix).parents)}
    user_db = {f"/etc/{name}{suffix}" for name in USER_DB for suffix in ("", "-")}
    unexpected = [p for p in added if not p.startswith(allowed) and p not in ancestors | user_db]
    assert unexpected == []
    for banned in ("pytest", "_pytest", "mypy", "ruff", "hadolint", "tests/", "benchmarks/"):
        assert not [p for p in added if p.startswith(site + banned) or f"/app/{banned}" in p]
    # Baton's wheel carries the package only: no tests, benchmarks or dev tooling.
    (record,) = (root / site.lstrip("/")).glob("baton-*.dist-info/RECORD")
    entries = [line.split(",")[0] for line in record.read_text().splitlines() if line]
    dist_info = record.parent.name + "/"
    assert [e for e in entries if not e.startswith(("scheduler/", dist_info, "../"))] == []
    assert [e for e in entries if e.startswith("../")] == ["../../../bin/baton"]
    app = sorted(p for p in added if p.startswith("/app/"))
    assert all(p.startswith(("/app/jobs", "/app/.baton")) for p in app), app
    # No secret in the image's config or env: the backend URL comes from the Secret.
    defaults = (root / "etc/baton/baton.yaml").read_text()
    assert "backend" not in defaults and "password" not in defaults.lower()
    assert not any("BACKEND" in key or "PASSWORD" in key for key in built.image.env)


@pytest.mark.timeout(900)
def test_image_runs_as_uid_10001_and_only_app_baton_is_its_own(built: Built) -> None:
    """USER 10001:10001, a nologin user; /app/.baton (0755, its own) is the writable spot."""
    passwd = (built.rootfs / "etc/passwd").read_text().splitlines()
    (entry,) = [line for line in passwd if line.split(":")[2] == "10001"]
    name, _, uid, gid, _, home, shell = entry.split(":")
    assert (name, uid, gid, home, shell) == ("baton", "10001", "10001", "/app", "/usr/sbin/nologin")
    state = (built.rootfs / "app/.baton").stat()
    assert (state.st_uid, state.st_gid) == (10001, 10001)
    for path in ("app", "app/jobs", "etc/baton", "opt/venv"):
        info = (built.rootfs / path).stat()
        assert info.st_uid == 0 and not info.st_mode & stat.S_IWOTH, path


@pytest.mark.timeout(900)
def test_chart_deployment_matches_the_image(built: Built) -> None:
    """The rendered Deployment's entrypoint, args, port, user and config path are the image's."""
    rendered = render({"backend": {"url": "redis://redis:6379/0"}})
    container = rendered.container
    assert "command" not in container, "the chart must use the image's ENTRYPOINT"
    assert container["args"] == built.image.cmd
    (port,) = container["ports"]
    assert [f"{port['containerPort']}/{port['protocol'].lower()}"] == built.image.exposed_ports
    assert rendered.config["http"]["port"] == port["containerPort"]
    pod_security = rendered.pod["spec"]["securityContext"]
    user = f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"
    assert user == built.image.user
    assert pod_security["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["BATON_CONFIG"] == built.image.env["BATON_CONFIG"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/app/.baton", "/tmp", str(Path(env["BATON_CONFIG"]).parent)} <= mounts
    for path in mounts:
        assert (built.rootfs / path.lstrip("/")).is_dir(), f"{path}: no mount point in the image"
