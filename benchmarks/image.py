"""The container image: its size (total and Baton's own layers) and its build times.

The image is built from the repository's Dockerfile with podman, exactly as the deploy
tests build it (tests/deploy/image.py): only PYTHON_IMAGE is replaced, by a Debian bookworm
minbase with Python 3.11 in a venv, because the official ``python:3.11-slim`` cannot be
pulled on these machines.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.report import NO_TARGET, NOT_MEASURED, Section, Table
from tests.deploy.image import (
    BASE_RECIPE,
    BASE_REPOSITORY,
    base_key,
    build_image,
    ensure_base_image,
    image_exists,
    require_tools,
)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def run(quick: bool, base: Path) -> Section:
    section = Section("image", "6. Container image size and build time")
    require_tools()
    cached = image_exists(f"{BASE_REPOSITORY}:{base_key()}")
    started = time.monotonic()
    python_image = ensure_base_image()
    base_seconds = time.monotonic() - started
    cold = build_image(python_image, no_cache=True)
    warm = build_image(python_image)
    sizes = Table(["Image", "Size", "Reference", "Target", "Result"])
    sizes.add(
        "Baton image, total (on the Debian minbase base)",
        _mb(warm.size),
        "python:3.11-slim-bookworm: " + NOT_MEASURED,
        NO_TARGET,
        NO_TARGET,
    )
    sizes.add("Baton's own layers (above the base)", _mb(warm.own_size), "—", NO_TARGET, NO_TARGET)
    sizes.add(
        "the base (PYTHON_IMAGE): debootstrap minbase + python3 + venv",
        _mb(warm.base_size),
        "—",
        NO_TARGET,
        NO_TARGET,
    )
    times = Table(["Build", "Seconds"])
    base_how = "podman store (cached)" if cached else "debootstrap + import (cold)"
    times.add(f"base image ready: {base_how}", f"{base_seconds:.1f}")
    times.add("Baton image, every layer rebuilt (--no-cache)", f"{cold.build_seconds:.1f}")
    times.add("Baton image, podman layer cache warm", f"{warm.build_seconds:.1f}")
    section.tables = [sizes, times]
    section.method = [
        "`podman build --isolation chroot --build-arg PYTHON_IMAGE=<base> .` of the "
        "repository's Dockerfile, unchanged; sizes from `podman image inspect` (.Size, "
        "uncompressed); Baton's layers = image size - base size;",
        f"base: `debootstrap --variant={BASE_RECIPE['variant']} "
        f"--include={BASE_RECIPE['include']} {BASE_RECIPE['suite']}`, a venv at "
        f"{BASE_RECIPE['venv']} on PATH, apt caches and ensurepip wheels removed.",
    ]
    section.notes = [
        "The official python:3.11-slim-bookworm, the Dockerfile's default base, cannot be "
        "pulled on this machine (no container registry is reachable), so its size is not "
        "measured here; on it the image is that size plus Baton's own layers above.",
    ]
    section.summarize(
        "Container image size: total; Baton's own layers",
        f"{_mb(warm.size)}; {_mb(warm.own_size)}",
        "python:3.11-slim: " + NOT_MEASURED,
        "none (informative)",
        NO_TARGET,
    )
    return section
