"""Build the repository's Dockerfile with podman and run ``baton`` from the built image.

No container runtime works on these machines (``podman run``: crun may not set
RLIMIT_NOFILE), but building does, and so does running the image's own files: the image is
created and mounted (``podman create`` + ``podman mount``), and each replica runs in a
private mount namespace (``unshare --mount``) where that root is bind-mounted read-only,
with what the chart mounts (tmpfs at /tmp and /app/.baton, the ConfigMap at /etc/baton)
on top, then ``chroot --userspec`` to the image's user, with exactly the image's
ENTRYPOINT, ENV and WORKDIR from ``podman image inspect``. The network is the host's, so a
Redis on 127.0.0.1 is reachable; each replica serves HTTP on its own loopback address, as
each pod has its own IP.

The base image is the only change to the build: ``python:3.11-slim`` cannot be pulled
here, so ``PYTHON_IMAGE`` is a Debian bookworm minbase from ``debootstrap`` with a venv on
PATH (where the official image has /usr/local/bin) and the host's CA bundle (pip reaches
PyPI through the machine's TLS proxy). It is cached per machine, keyed by its recipe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy.chart import ROOT

#: Tools the deploy tests need, and the Debian package of each.
TOOLS = {
    "podman": "podman",
    "debootstrap": "debootstrap",
    "unshare": "util-linux",
    "chroot": "coreutils",
    "mount": "mount",
}
#: The base image's recipe: change any of it and the cache key changes.
BASE_RECIPE: dict[str, Any] = {
    "suite": "bookworm",
    "variant": "minbase",
    "include": "python3,python3-venv",
    "mirror": "http://deb.debian.org/debian",
    "venv": "/opt/venv",
    # Caches the image must not carry (the hygiene test checks the final image for them),
    # and ensurepip's wheels (the venv has pip; python:3.11-slim ships no .whl either).
    "remove": [
        "/var/cache/apt/archives",
        "/var/lib/apt/lists",
        "/var/cache/apt/*.bin",
        "/usr/share/python-wheels",
    ],
    "revision": 1,
}
BASE_PATH = (
    BASE_RECIPE["venv"] + "/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)
#: The host's CA bundle, copied into the base so that pip in the builder stage reaches PyPI.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: The Baton image the tests build (a fixed tag: each build replaces the last).
IMAGE_TAG = "localhost/baton:deploy-test"
BASE_REPOSITORY = "localhost/baton-test-python"
#: Where each replica's private mount namespace puts the image's read-only root.
MOUNTPOINT = Path(tempfile.gettempdir()) / "baton-image-root"
#: Seconds a build may take: a cold base (debootstrap) is about a minute here.
BASE_TIMEOUT = 600.0
BUILD_TIMEOUT = 600.0


def require_tools() -> None:
    """Fail (never skip) when a tool is missing, naming the packages to install.

    Raises:
        AssertionError: a tool is missing, or the run is not root (mounts need it).
    """
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    assert not missing, (
        f"the deploy tests need {', '.join(missing)}: apt-get install {' '.join(missing)} "
        "(scripts/ensure-servers.sh installs them)"
    )
    assert os.geteuid() == 0, "the deploy tests mount the image and chroot: run them as root"


def cache_dir() -> Path:
    """Where the base image's root file system is kept between runs on this machine."""
    configured = os.environ.get("BATON_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path("/var/cache/baton-test") if os.geteuid() == 0 else Path.home() / ".cache/baton"


def base_key() -> str:
    """A hash of the base recipe and of the CA bundle it copies."""
    digest = hashlib.sha256(json.dumps(BASE_RECIPE, sort_keys=True).encode())
    digest.update(CA_BUNDLE.read_bytes() if CA_BUNDLE.exists() else b"")
    return digest.hexdigest()[:16]


def podman(*args: str, timeout: float = 120.0, stdin: bytes | None = None) -> str:
    """Run ``podman ARGS``; its stdout, or an AssertionError carrying its output."""
    result = subprocess.run(
        ["podman", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, (
        f"podman {' '.join(args)} exited {result.returncode}:\n"
        f"{output[-4000:]}{result.stderr.decode(errors='replace')[-4000:]}"
    )
    return output


def image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0


def _run(argv: Sequence[str], timeout: float) -> None:
    result = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}:\n"
        f"{(result.stdout + result.stderr).decode(errors='replace')[-4000:]}"
    )


def _make_base_tarball(tarball: Path) -> None:
    """debootstrap the recipe, add the venv and CA bundle, drop the caches, tar it."""
    recipe = BASE_RECIPE
    work = Path(tempfile.mkdtemp(prefix="base-", dir=tarball.parent))
    rootfs = work / "rootfs"
    try:
        _run(
            [
                "debootstrap",
                f"--variant={recipe['variant']}",
                f"--include={recipe['include']}",
                recipe["suite"],
                str(rootfs),
                recipe["mirror"],
            ],
            BASE_TIMEOUT,
        )
        _run(["chroot", str(rootfs), "python3", "-m", "venv", recipe["venv"]], 120)
        shutil.copyfile(CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        for pattern in recipe["remove"]:
            for path in rootfs.glob(pattern.lstrip("/")):
                if path.is_dir():
                    for child in path.iterdir():
                        if child.is_file() or child.is_symlink():
                            child.unlink()
                else:
                    path.unlink()
        (rootfs / "etc/resolv.conf").write_text("")  # the build mounts the host's
        partial = tarball.with_suffix(".partial")
        _run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], 300)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_base_image() -> str:
    """The base image (``PYTHON_IMAGE``), built once per recipe and machine; its reference.

    The root file system is kept as a tarball in :func:`cache_dir`, so a machine whose
    podman store was pruned imports it again in seconds instead of running debootstrap.
    """
    key = base_key()
    ref = f"{BASE_REPOSITORY}:{key}"
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions build it once
        if image_exists(ref):
            return ref
        tarball = directory / f"python-base-{key}.tar"
        if not tarball.exists():
            _make_base_tarball(tarball)
            for stale in directory.glob("python-base-*.tar"):  # an older recipe's
                if stale != tarball:
                    stale.unlink()
        podman(
            "import",
            "--change",
            f"ENV PATH={BASE_PATH}",
            "--change",
            'CMD ["python3"]',
            str(tarball),
            ref,
            timeout=300,
        )
    return ref


@dataclass(frozen=True)
class ImageConfig:
    """What ``podman image inspect`` says about the built image."""

    ref: str
    base: str
    user: str
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    workdir: str
    exposed_ports: list[str]
    size: int
    base_size: int
    build_seconds: float

    @property
    def own_size(self) -> int:
        """Bytes of Baton's own layers (everything above the base image)."""
        return self.size - self.base_size


def inspect(ref: str) -> dict[str, Any]:
    """``podman image inspect REF``, parsed."""
    (data,) = json.loads(podman("image", "inspect", ref))
    return dict(data)


def build_image(base: str, tag: str = IMAGE_TAG, *, no_cache: bool = False) -> ImageConfig:
    """Build the repository's Dockerfile as a user would, only PYTHON_IMAGE replaced.

    ``no_cache`` rebuilds every layer: the tests do (podman's layer cache does not key the
    install step on the wheels it bind-mounts, so a cached rebuild can keep an older Baton);
    the benchmark times both a cold and a warm build.

    Raises:
        AssertionError: the build failed (with the end of its output).
    """
    started = time.monotonic()
    podman(
        "build",
        "--isolation",
        "chroot",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--tag",
        tag,
        *(["--no-cache"] if no_cache else []),
        str(ROOT),
        timeout=BUILD_TIMEOUT,
    )
    seconds = time.monotonic() - started
    data = inspect(tag)
    config = data["Config"]
    return ImageConfig(
        ref=tag,
        base=base,
        user=config.get("User", ""),
        entrypoint=list(config.get("Entrypoint") or []),
        cmd=list(config.get("Cmd") or []),
        env=dict(item.split("=", 1) for item in config.get("Env") or []),
        workdir=config.get("WorkingDir", ""),
        exposed_ports=sorted(config.get("ExposedPorts") or {}),
        size=int(data["Size"]),
        base_size=int(inspect(base)["Size"]),
        build_seconds=seconds,
    )


@contextlib.contextmanager
def mounted(ref: str) -> Iterator[Path]:
    """The image's root file system (``podman create`` + ``podman mount``), removed after."""
    container = podman("create", ref).strip()
    try:
        yield Path(podman("mount", container).strip())
    finally:
        subprocess.run(["podman", "umount", container], capture_output=True, check=False)
        subprocess.run(["podman", "rm", "-f", container], capture_output=True, check=False)


@dataclass(frozen=True)
class Tmpfs:
    """A tmpfs mounted over ``target`` (an emptyDir), owned by ``uid``:``gid``."""

    target: str
    uid: int
    gid: int
    mode: str = "0755"


@dataclass(frozen=True)
class Bind:
    """A host directory bind-mounted at ``target`` (a ConfigMap, a volume)."""

    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Container:
    """How to run the image like the chart's pod: user, extra env and mounts, argv."""

    rootfs: Path
    image: ImageConfig
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Tmpfs | Bind] = ()

    def argv(self, args: Sequence[str] | None = None) -> list[str]:
        """The host command that runs ENTRYPOINT + (``args`` or CMD) as the image would.

        Every ``exec`` keeps one process: the pid of the returned command is ``baton``'s
        own, so a signal to it reaches Baton. The mounts live in the process's private
        mount namespace and vanish with it.
        """
        uid, _, gid = self.image.user.partition(":")
        assert uid.isdigit() and gid.isdigit(), f"image USER {self.image.user!r} is not numeric"
        MOUNTPOINT.mkdir(exist_ok=True)  # one path for all: each namespace has its own
        root = shlex.quote(str(MOUNTPOINT))
        lines = [
            "set -eu",
            f"mount --bind {shlex.quote(str(self.rootfs))} {root}",
            f"mount -o remount,bind,ro {root}",  # readOnlyRootFilesystem
            f"mount -t proc proc {root}/proc",
            f"mount --rbind /dev {root}/dev",
        ]
        for item in self.mounts:
            target = f"{root}{shlex.quote(item.target)}"
            if isinstance(item, Tmpfs):
                options = f"mode={item.mode},uid={item.uid},gid={item.gid},size=64m"
                lines.append(f"mount -t tmpfs -o {options} tmpfs {target}")
            else:
                lines.append(f"mount --bind {shlex.quote(str(item.source))} {target}")
                if item.read_only:
                    lines.append(f"mount -o remount,bind,ro {target}")
        environment = {**self.image.env, **self.env}
        command = [
            "/usr/bin/env",
            "-i",
            "-C",
            self.image.workdir or "/",
            *(f"{key}={value}" for key, value in environment.items()),
            *self.image.entrypoint,
            *(self.image.cmd if args is None else args),
        ]
        lines.append(
            f"exec chroot --userspec={uid}:{gid} {root} "
            + " ".join(shlex.quote(part) for part in command)
        )
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)]

    def run(self, args: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``baton ARGS`` from the image to completion."""
        return subprocess.run(
            self.argv(args), capture_output=True, text=True, timeout=timeout, check=False
        )
