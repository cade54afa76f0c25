"""The HTTP API (FastAPI): `create_app` builds the service's parts once (`deps.Services`),
installs the error handlers (`errors`), the bearer-token middleware (`auth`), the routers
(`routes/`) and the web console's static files at /ui/ (`console`). Logic lives in the library
(`ragctl.query`, `ragctl.stats`, `ragctl.manager`) and in `engine`/`jobs`/`upload`. The
endpoints: docs/api.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from ragctl import __version__
from ragctl.searchers import SearcherCache
from ragctl.serve.auth import BearerAuth, bearer_scheme
from ragctl.serve.config import ServeConfig
from ragctl.serve.console import mount as mount_console
from ragctl.serve.deps import Services
from ragctl.serve.engine import Engine
from ragctl.serve.errors import install_error_handlers
from ragctl.serve.guard import SlowBodyGuard
from ragctl.serve.jobs import JobStore, Staging
from ragctl.serve.routes import entities, errors, health, search, uploads

log = logging.getLogger("ragctl.serve")


def build_services(config: ServeConfig) -> Services:
    from ragctl.storage import open_store

    open_store(config.store, create=True)  # the store exists from the first request on
    jobs = JobStore(config.store)
    staging = Staging(config.staging_bytes, config.staging_files)
    return Services(config, jobs, staging, Engine(config, jobs, staging), SearcherCache(config.store, config.model,
                                                                                       config.search_cache_bytes))


def create_app(config: ServeConfig) -> FastAPI:
    svc = build_services(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        resume = svc.jobs.recover(config.job_retention_days)
        if resume:
            log.warning("resuming %d unfinished upload job(s)", len(resume))
        svc.engine.start(resume)
        try:
            yield
        finally:
            await asyncio.to_thread(svc.engine.stop)

    app = FastAPI(title="ragctl", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  swagger_ui_oauth2_redirect_url=None,
                  description="Upload documents into per-entity indexes, follow the jobs, search.")
    app.state.services = svc
    install_error_handlers(app)
    app.include_router(health.public)
    protected = {"dependencies": [Depends(bearer_scheme)], "responses": errors(401, 503)} \
        if config.auth_required else {"responses": errors(503)}
    for module in (health, uploads, entities, search):
        app.include_router(module.router, **protected)  # type: ignore[arg-type]
    mount_console(app)  # /ui/: the web console's static files (public; the page asks for the token)
    app.add_middleware(BearerAuth, config=config)
    app.add_middleware(SlowBodyGuard)  # outermost: every body, the upload's included
    return app
