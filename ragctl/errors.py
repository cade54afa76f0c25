"""Exception types shared by the library; the CLI maps them to exit codes."""


class RagctlError(Exception):
    """Base class for every error ragctl raises on purpose."""


class UsageError(RagctlError):
    """Bad input from the caller (invalid entity id, unknown entity, bad option): exit 2."""


class ConfigError(UsageError):
    """The store or model configuration does not match (other model, other dimension): exit 2."""


class StorageError(RagctlError):
    """A store file could not be read or written (disk full, permissions, corrupt JSON)."""


class UnsupportedFormat(RagctlError):
    """The file type has no parser: the file is counted as skipped, not failed."""


class ParseError(RagctlError):
    """The file has a supported type but could not be read: counted as failed."""


class EncodeFailure(RagctlError):
    """Some rows of an `encode` call could not be embedded (a remote service refused their
    request, or gave up after retries). `vectors` holds every row (the failed ones are zeros);
    `failed` maps a failed row's index to its one-line reason. The ingest engine fails only the
    documents those rows belong to."""

    def __init__(self, vectors: object, failed: dict[int, str]) -> None:
        reasons = sorted(set(failed.values()))
        super().__init__(f"{len(failed)} text(s) not embedded: {reasons[0] if reasons else '?'}")
        self.vectors = vectors
        self.failed = failed
