"""Crash-safe file writes: temp file in the same directory, flush, fsync, replace, fsync dir."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ragctl.errors import StorageError


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new file, never a mix.

    A crash before the replace leaves the previous file intact; an OSError (disk full,
    permission denied) is raised as StorageError naming the file, the temp file is removed.
    """
    path = Path(path)
    directory = path.parent
    tmp_name = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def atomic_write_json(path: Path, obj: Any) -> None:
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    atomic_write_bytes(path, data.encode("utf-8"))


def read_json(path: Path, default: Any = None) -> Any:
    """Parse a JSON file; a missing file gives `default`, a corrupt one raises StorageError."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return default
    except OSError as exc:
        raise StorageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise StorageError(f"{path}: not valid JSON: {exc}") from exc
