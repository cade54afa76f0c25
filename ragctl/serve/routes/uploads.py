"""Uploads and their jobs: POST /api/entities/{entity_id}/files, GET /api/jobs/{job_id},
GET /api/entities/{entity_id}/jobs. What 202 means: `jobs` (the durability protocol)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from ragctl.serve.deps import AllowedDep, EntityDep, ServicesDep
from ragctl.serve.errors import HttpError, disconnected, retry_later
from ragctl.serve.jobs import FINISHED, QUEUED, StagingFull
from ragctl.serve.routes import errors
from ragctl.serve.schemas import JOB_ID_REGEX, UPLOAD_BODY, Job, JobList, JobStatus, UploadAck
from ragctl.serve.upload import receive

router = APIRouter(tags=["uploads"])

_JOB_LINKS = {
    "GetJob": {"operationId": "getJob", "parameters": {"job_id": "$response.body#/job_id"}},
    "ListJobs": {"operationId": "listJobs", "parameters": {"entity_id": "$response.body#/entity_id"}},
    "Search": {"operationId": "search", "parameters": {"entity_id": "$response.body#/entity_id"}},
    "ListFiles": {"operationId": "listFiles", "parameters": {"entity_id": "$response.body#/entity_id"}},
    "DeleteEntity": {"operationId": "deleteEntity", "parameters": {"entity_id": "$response.body#/entity_id"}},
}


@router.post(
    "/api/entities/{entity_id}/files", status_code=202, response_model=UploadAck, operation_id="uploadFiles",
    summary="Upload files into an entity (a job)", openapi_extra={"requestBody": UPLOAD_BODY},
    responses={
        202: {"description": "staged durably: the job is queued", "links": _JOB_LINKS,
              "headers": {"Location": {"description": "the job", "schema": {"type": "string"}}}},
        200: {"model": Job, "description": "with wait=true: the finished job", "links": _JOB_LINKS,
              "headers": {"Location": {"description": "the job", "schema": {"type": "string"}}}},
        **errors(400, 403, 408, 413, 415, 422, 503),
    },
)
async def upload(
    request: Request, entity_id: EntityDep, svc: ServicesDep,
    wait: Annotated[bool, Query(description="answer when the job is done (200), not at once (202)")] = False,
) -> JSONResponse:
    if svc.engine.state == "failed":
        raise retry_later("unavailable", svc.engine.error or "the ingest engine failed", 30)
    if svc.staging.full():
        raise StagingFull("the upload staging area is full")
    config = svc.config
    job = svc.jobs.new_job(entity_id)
    try:
        job.files = await receive(request.stream(), request.headers.get("content-type", ""),
                                  request.headers.get("content-length"), job, svc.staging,
                                  config.max_upload_bytes, config.max_files_per_upload)
        await asyncio.to_thread(svc.jobs.commit, job)
    except ClientDisconnect:
        svc.jobs.discard(job)
        return disconnected(request)
    except BaseException:
        svc.jobs.discard(job)
        raise
    svc.engine.submit(job)
    headers = {"Location": f"/api/jobs/{job.job_id}"}
    if wait:
        deadline = time.monotonic() + config.wait_timeout_s
        while not job.done_event.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if job.done_event.is_set():
            return JSONResponse(Job.model_validate(job.to_json()).model_dump(), status_code=200, headers=headers)
    ack = UploadAck(job_id=job.job_id, entity_id=entity_id, status=job.status,  # type: ignore[arg-type]
                    files=[f.ack() for f in job.files])  # type: ignore[misc]
    return JSONResponse(ack.model_dump(), status_code=202, headers=headers)


def job_view(svc: ServicesDep, job_id: str) -> dict[str, Any] | None:
    """A job as the API shows it: this process's live state, else its manifest."""
    live = svc.engine.get(job_id)
    job = live or svc.jobs.load(job_id)
    if job is None:
        return None
    body = job.to_json()
    if live is None and job.status not in FINISHED:
        body["status"] = QUEUED  # on disk, not picked up by this process (yet)
    return body


@router.get("/api/jobs/{job_id}", response_model=Job, operation_id="getJob", summary="One job",
            responses={200: {"links": {k: v for k, v in _JOB_LINKS.items() if k != "GetJob"}},
                       **errors(404, 422)})
def get_job(job_id: Annotated[str, Path(pattern=JOB_ID_REGEX)], svc: ServicesDep, allowed: AllowedDep) -> Any:
    body = job_view(svc, job_id)
    if body is None or (allowed is not None and body["entity_id"] not in allowed):
        raise HttpError(404, "unknown_job", f"no job {job_id!r}")
    return body


@router.get("/api/entities/{entity_id}/jobs", response_model=JobList, operation_id="listJobs",
            summary="An entity's jobs, newest first", responses=errors(403, 422))
def list_jobs(
    entity_id: EntityDep, svc: ServicesDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    found: list[dict[str, Any]] = []
    for job_id in svc.jobs.job_ids(entity_id):  # this entity's jobs only, newest first
        body = job_view(svc, job_id)
        if body is None or body["entity_id"] != entity_id or (status and body["status"] != status):
            continue
        found.append(body)
        if len(found) == limit:
            break
    return {"entity": entity_id, "status": status, "limit": limit, "count": len(found), "jobs": found}
