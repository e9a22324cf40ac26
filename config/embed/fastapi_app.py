"""Recipe: Baton inside a FastAPI (or Starlette) application under uvicorn.

    BATON_CONFIG=baton.yaml uvicorn fastapi_app:app --workers 4

Every uvicorn worker process is one replica (its id: the configured one, by default the
host name, plus ``-<pid>``); together they elect one leader, so each tick fires once however
many workers and hosts run the app. ``async def`` jobs run on the worker's own event loop
(the lifespan's), plain ones on Baton's bounded thread pool. On SIGTERM uvicorn runs the
lifespan's exit: no new fire, running jobs get ``shutdown_grace``, the lease is released
and another replica leads within milliseconds.

The status page is mounted at ``/baton/`` (read-only; it needs no port of its own, which N
workers could not share).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from scheduler import BatonReplica

# Settings as `baton run` reads them: BATON_CONFIG (a YAML file), then BATON_* variables,
# then keyword arguments here. Building it loads the jobs modules; nothing starts yet.
baton = BatonReplica()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with baton:  # start: join the election; exit: graceful handover
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/baton", baton.asgi_app())


@app.get("/")
async def index() -> dict[str, object]:
    return {"replica": baton.replica_id, "leads": baton.is_leader()}
