"""The ingest engine as stages: plan -> parse -> embed -> commit, wired by `run`.

See docs/architecture.md for the threads, processes and queues. Importing this package is
cheap (the CLI imports it for option defaults); the stages load on first use.
"""

from ragctl.ingest.options import IngestOptions, Limits

__all__ = ["IngestOptions", "IngestReport", "EntityReport", "Limits", "ingest"]


def __getattr__(name: str):  # PEP 562: keep `ragctl --help` free of faiss/numpy imports
    if name == "ingest":
        from ragctl.ingest.run import ingest

        return ingest
    if name in ("IngestReport", "EntityReport"):
        from ragctl.ingest import report

        return getattr(report, name)
    raise AttributeError(name)
