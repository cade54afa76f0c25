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
