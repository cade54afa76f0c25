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


_umask_cache: list[int] = []


def _file_mode(path: Path) -> int:
    """The mode a plain open() would leave: the replaced file's, else 0o666 minus the umask
    (mkstemp creates 0o600, which would lock other users out of a shared store)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        pass
    if not _umask_cache:
        umask = 0o022
        try:  # read, not set: os.umask() would race with other threads creating files
            with open("/proc/self/status", encoding="ascii") as fh:
                umask = next((int(line.split()[1], 8) for line in fh if line.startswith("Umask:")), umask)
        except (OSError, ValueError):
            pass
        _umask_cache.append(umask)
    return 0o666 & ~_umask_cache[0]


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
            os.fchmod(handle.fileno(), _file_mode(path))
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
