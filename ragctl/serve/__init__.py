"""`ragctl serve`: the HTTP upload/search service over the same ingest engine.

    app.py        create_app: builds the parts once, installs handlers, middleware, routers
    routes/       one APIRouter per resource (health, uploads + jobs, entities, search)
    deps.py       what routes depend on: Services (config, engine, jobs, staging, searchers),
                  the token's entities, the entity in the URL (403 / 404)
    schemas.py    request and response bodies (the OpenAPI document)
    errors.py     HttpError, the one HTTP error type, and the handlers (one error body)
    auth.py       bearer tokens, checked before routing and before any body is read
    guard.py      slow clients: head deadline (uvicorn protocol), body rate (middleware)
    upload.py     streaming multipart bodies into the staging area (bounded memory, 413)
    jobs.py       staged jobs on disk: the durability protocol behind "202"; StagingFull (503)
    engine.py     one IngestRun for the server's life, fed by the job queue
    (ragctl/searchers.py: the cache of one Searcher per entity, shared with `ragctl mcp`)
    config.py     ServeConfig and the tokens file

Importing this package is cheap; FastAPI is imported by `create_app`'s module only.
"""

from ragctl.serve.config import ServeConfig, load_tokens_file

__all__ = ["ServeConfig", "load_tokens_file"]
