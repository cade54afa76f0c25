"""File primitives, each defined once: atomic writes (temp file in the same directory, flush,
fsync, replace, fsync dir), JSON encoding, per-file locks, timestamps."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ragctl.errors import StorageError


def now_iso() -> str:
    """UTC timestamp used in every record, manifest and meta file."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def lock_path_for(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".lock")


@contextmanager
def file_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold `<path>.lock` (flock). A fresh FileLock per acquisition: flock on separate
    descriptors excludes other threads of this process as well as other processes, and the
    kernel releases it when the holder dies. Lock files are never deleted while in use."""
    from filelock import FileLock, Timeout

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path_for(path)), timeout=timeout)
    try:
        lock.acquire()
    except Timeout as exc:
        raise StorageError(f"{path}: timed out after {timeout}s waiting for its lock") from exc
    try:
        yield
    finally:
        lock.release()


def fsync_path(path: Path) -> None:
    """fsync a file's data, or a directory's entries (after a create, rename or unlink in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_path


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


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None, sync_dir: bool = True) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new file, never a mix."""
    atomic_write(path, lambda handle: handle.write(data), mode=mode, sync_dir=sync_dir)


def atomic_write(
    path: Path, fill: Callable[[BinaryIO], object], *, mode: int | None = None, sync_dir: bool = True,
    make_dirs: bool = True,
) -> None:
    """Replace `path` with what `fill(handle)` writes: temp file in the same directory, flush,
    fsync, `os.replace`, fsync the directory. The only place ragctl replaces a file.

    A crash before the replace leaves the previous file intact; an OSError (disk full,
    permission denied) is raised as StorageError naming the file, the temp file is removed.
    `sync_dir=False` leaves the directory fsync to the caller (one fsync after many files).
    `make_dirs=False`: a missing directory is an error (FileNotFoundError as the cause), for
    writers that must not bring back a directory someone removed (a merge of a deleted entity).
    """
    path = Path(path)
    directory = path.parent
    tmp_name = None
    try:
        if make_dirs:
            directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _file_mode(path) if mode is None else mode)
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        if sync_dir:
            fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def remove_stale_temps(path: str | os.PathLike[str]) -> None:
    """Remove the temp files that killed atomic writes of `path` left beside it.

    Only call this while holding `path`'s lock: a temp file is then never a live writer's.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return
    for name in names:
        if pattern.fullmatch(name):
            try:
                os.unlink(path.parent / name)
            except OSError:
                pass


def json_bytes(obj: Any) -> bytes:
    """The one JSON encoding of store files: compact, UTF-8, sorted keys."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


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


# -- liveness markers: a file that is flock'ed for exactly as long as its owner is alive ----------
def hold_marker(path: Path, payload: bytes) -> int:
    """Create `path` (it must not exist), write `payload`, flock it exclusively, and return the
    descriptor: the marker says "in progress" until `release_marker`, or until the owner dies
    (the kernel drops the flock). The one place ragctl uses flock directly; the marker is
    unique to its owner, so unlinking it on release is safe (unlike a shared lock file)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: never blocks
        os.write(fd, payload)
    except OSError as exc:  # disk full: no marker may stay behind looking alive
        release_marker(path, fd)
        raise StorageError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return fd


def release_marker(path: Path, fd: int) -> None:
    Path(path).unlink(missing_ok=True)
    os.close(fd)


def read_live_marker(path: Path) -> bytes | None:
    """The payload of a marker whose owner is alive (its flock is held); None for a marker left
    by a dead owner or one already gone."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: the owner is alive
            return os.read(fd, 1 << 24)
        return None
    finally:
        os.close(fd)  # also drops our probe lock, if we got it


# -- publishing a finished file or directory under its final name ---------------------------------
def publish(tmp: Path, final: Path, *, replace: bool = False) -> None:
    """Give a fully written `tmp` (a file, or a directory of files) its final name in the same
    directory: fsync its data, rename (or replace), fsync the directory. With replace=False an
    existing `final` directory is an error (a reader may be using it). OSError -> StorageError.
    The only place ragctl renames a finished file into place besides `atomic_write`."""
    tmp, final = Path(tmp), Path(final)
    try:
        if tmp.is_dir():
            for file in tmp.iterdir():
                if file.is_file():
                    fsync_path(file)
            fsync_dir(tmp)
        else:
            fsync_path(tmp)
        (os.replace if replace else os.rename)(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        raise StorageError(f"{final}: cannot write: {exc.strerror or exc}") from exc
