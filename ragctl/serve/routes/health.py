"""GET /healthz (no auth) and GET /api/status."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ragctl import __version__
from ragctl.serve.deps import ServicesDep
from ragctl.serve.errors import RETRY_AFTER_S
from ragctl.serve.routes import errors
from ragctl.serve.schemas import Health, ServiceStatus

public = APIRouter(tags=["health"])
router = APIRouter(tags=["health"])


@public.get("/healthz", response_model=Health, operation_id="health", responses=errors(503))
def healthz(svc: ServicesDep) -> JSONResponse:
    engine = svc.engine
    body = Health(status="ok" if engine.state in ("running", "loading") else engine.state, engine=engine.state,
                  version=__version__)
    if engine.state == "failed":
        message = f"the ingest engine failed: {engine.error}"
        return JSONResponse({"error": {"code": "unavailable", "message": message}}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    return JSONResponse(body.model_dump())


@router.get("/api/status", response_model=ServiceStatus, operation_id="serviceStatus")
def status(svc: ServicesDep) -> ServiceStatus:
    return ServiceStatus.model_validate({"engine": svc.engine.stats(), "staging": svc.staging.to_json(),
                                         "search": svc.searchers.status(svc.engine.embedder)})
