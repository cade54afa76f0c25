"""`ragctl serve`: the HTTP upload/search service over the same ingest engine.

    app.py     routes, auth, errors (FastAPI)
    upload.py  streaming multipart bodies into the staging area (bounded memory, 413/503)
    jobs.py    staged jobs on disk: the durability protocol behind "202"
    engine.py  one IngestRun for the server's life, fed by the job queue
    config.py  ServeConfig and the tokens file

Importing this package is cheap; FastAPI is imported by `create_app`'s module only.
"""

from ragctl.serve.config import ServeConfig, load_tokens_file

__all__ = ["ServeConfig", "load_tokens_file"]
