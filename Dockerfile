# syntax=docker/dockerfile:1
# Baton's container image: `baton run` as a non-root user, the example jobs in /app/jobs.
#
#   docker build -t baton .        # or: podman build -t baton .
#   docker run --rm -e BATON_BACKEND=redis://redis:6379/0 baton            # a replica
#   docker run --rm -e BATON_BACKEND=redis://redis:6379/0 baton leader     # who leads
#
# Your own jobs: README.md, "Deploy on Kubernetes", "1. Build an image with your jobs".
# BuildKit (the default builder since Docker 23) or podman/buildah 4.3+ is required for the
# RUN --mount below.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: wheels of Baton and of every runtime dependency ----------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the wheel needs: the package, its metadata and the README it names.
COPY pyproject.toml README.md ./
COPY scheduler/ scheduler/
# The postgresql extra (psycopg 3, binary wheel) and the etcd extra (httpx): one image for
# every backend.
RUN pip wheel --wheel-dir /wheels ".[postgresql,etcd]"

# ---- runtime: slim base, runtime dependencies only, non-root -----------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="baton" \
      org.opencontainers.image.description="Distributed cron for Python: every replica schedules, exactly one fires each tick." \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric UID/GID, so Kubernetes can check runAsNonRoot and volumes can be owned.
ARG BATON_UID=10001
ARG BATON_GID=10001
RUN groupadd --system --gid "${BATON_GID}" baton \
    && useradd --system --uid "${BATON_UID}" --gid baton --no-create-home \
       --home-dir /app --shell /usr/sbin/nologin baton

# Install from the builder's wheels only (--no-index: nothing else can slip in). The wheel
# directory is bind-mounted for this one step, so no wheel stays in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    pip install --no-cache-dir --no-index /wheels/*.whl

# /app is the working directory and on PYTHONPATH, so `jobs:` entries name packages under
# it: the examples are /app/jobs (config `jobs: [jobs]`); yours go beside them.
# /app/.baton is the writable scratch directory (the embedded SQLite default of a lone
# `docker run`, the example heartbeat's ledger); Kubernetes mounts an emptyDir there.
WORKDIR /app
COPY jobs/ /app/jobs/
# Image defaults, in a file so that a mounted config (the chart's ConfigMap replaces
# /etc/baton) or BATON_<KEY> variables override them: JSON logs, the example jobs,
# /healthz & co. on port 8080 (the chart's http.port). The backend comes from
# BATON_BACKEND (a Secret), never from this file.
RUN python -m compileall -q /app/jobs \
    && mkdir -p /app/.baton /etc/baton \
    && chown baton:baton /app/.baton \
    && printf 'jobs: [jobs]\nlog_format: json\nhttp:\n  port: 8080\n' > /etc/baton/baton.yaml

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    BATON_CONFIG=/etc/baton/baton.yaml

EXPOSE 8080
USER ${BATON_UID}:${BATON_GID}
ENTRYPOINT ["baton"]
CMD ["run"]
