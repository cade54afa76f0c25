"""ROOT + --entities -> entity sources; walking an entity's tree.

Each immediate subdirectory of ROOT is an entity named after it. `--entities a,b` restricts to
those; an item `ID=PATH` maps an entity to any directory. Hidden files and directories (a name
starting with '.') are ignored; symlinks are followed only while they stay inside the entity's
directory, so a link can never pull files from elsewhere into a tenant's index.

File names that are not valid UTF-8 (Latin-1 trees, old archives): `SourceFile.rel_path`, the
document's identity (stored in JSON as `path`), is the name decoded as UTF-8 with every
undecodable byte written as a `\\xNN` escape, so it is always printable, JSON-safe text;
`abs_path` keeps the real on-disk name for opening. A real name that contains a literal
backslash followed by `x` and two hex digits would map to the same identity as the byte it
spells; such names are not expected in document trees and are accepted as a known collision.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ragctl.errors import UsageError
from ragctl.ids import ENTITY_ID_RULE, is_valid_entity_id, validate_entity_id


def identity_path(path: str | os.PathLike[str]) -> str:
    """A relative path as a document identity: POSIX separators, undecodable bytes as `\\xNN`.

    `os` hands out names that are not valid UTF-8 as str with surrogate escapes, which cannot
    be written as UTF-8 (JSON, SQLite, a terminal); this turns them into visible escapes.
    """
    path = os.fspath(path)
    if os.sep == "/" and path.isascii():  # the common case, without a round trip through bytes
        return path
    raw = os.fsencode(path)
    if os.sep != "/":  # pragma: no cover - POSIX only today
        raw = raw.replace(os.fsencode(os.sep), b"/")
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class SourceFile:
    rel_path: str  # POSIX path relative to the entity root: the identity of a document (identity_path)
    abs_path: Path  # the real name on disk (may hold surrogate escapes): open this, never show it


@dataclass(frozen=True)
class EntitySource:
    entity_id: str
    root: Path
    # An explicit file list (library calls with paths): only these files are considered and
    # records of other files are neither stale nor pruned. None: walk `root`.
    files: tuple[SourceFile, ...] | None = None
    # A part of the tree at `root` (a watcher's changes, ingest/watch.py): `files` are the changed
    # files, `scope` the changed paths (files or directories relative to root; "" is the whole
    # tree). Records at or under a scope path whose file left the disk are gone, moves are found
    # as in a tree walk; records elsewhere are untouched. None: `files` is a plain explicit list.
    scope: tuple[str, ...] | None = None

    def list_files(self) -> list[SourceFile]:
        return list(self.files) if self.files is not None else list(walk_files(self.root))


def source_from_paths(entity_id: str, paths: list[str | os.PathLike[str]]) -> EntitySource:
    """An entity from explicit files/directories; documents are named relative to their
    common parent directory."""
    validate_entity_id(entity_id)
    resolved = [Path(p).expanduser().resolve() for p in paths]
    if not resolved:
        raise UsageError(f"entity {entity_id!r}: no paths given")
    for path in resolved:
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
    base = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in resolved]))
    files: dict[str, SourceFile] = {}
    for path in resolved:
        if path.is_dir():
            for f in walk_files(path):
                rel = identity_path(f.abs_path.relative_to(base))
                files[rel] = SourceFile(rel, f.abs_path)
        else:
            rel = identity_path(path.relative_to(base))
            files[rel] = SourceFile(rel, path)
    return EntitySource(entity_id, base, tuple(files[k] for k in sorted(files)))


def parse_entity_args(items: list[str] | str | None) -> list[tuple[str, Path | None]]:
    """`["a,b", "c=/x"]` -> [("a", None), ("b", None), ("c", Path("/x"))], ids validated."""
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    out: list[tuple[str, Path | None]] = []
    seen: set[str] = set()
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            entity_id, sep, path = part.partition("=")
            entity_id = validate_entity_id(entity_id.strip())
            if entity_id in seen:
                raise UsageError(f"entity {entity_id!r} is given twice")
            seen.add(entity_id)
            out.append((entity_id, Path(path).expanduser() if sep else None))
    return out


def discover_entities(root: Path | None, entities: list[str] | str | None = None) -> list[EntitySource]:
    """Resolve the entities to ingest. Raises UsageError before anything touches the store."""
    requested = parse_entity_args(entities)
    found: dict[str, Path] = {}
    rejected: list[str] = []
    if root is not None:
        if not root.is_dir():
            raise UsageError(f"{root}: not a directory")
        found, rejected = _entity_dirs(root)
    if not requested:
        if root is None:
            raise UsageError("give a root directory or entities as ID=PATH")
        if not found:
            why = ""
            if rejected:
                names = ", ".join(repr(identity_path(n)) for n in rejected[:5]) + (", …" if len(rejected) > 5 else "")
                why = f"; {len(rejected)} skipped, their names are not valid entity ids ({ENTITY_ID_RULE}): {names}"
            raise UsageError(f"{root}: no entity directories (each subdirectory is an entity){why}")
        return [EntitySource(e, p) for e, p in found.items()]
    sources = []
    for entity_id, path in requested:
        if path is None:
            if entity_id not in found:
                where = f"under {root}" if root is not None else "(no ROOT given)"
                raise UsageError(f"unknown entity {entity_id!r}: no directory {where}")
            path = found[entity_id]
        elif not path.is_dir():
            raise UsageError(f"entity {entity_id!r}: {path} is not a directory")
        sources.append(EntitySource(entity_id, path))
    return sources


def _entity_dirs(root: Path) -> tuple[dict[str, Path], list[str]]:
    """ROOT's visible subdirectories: those named like entity ids, and the names of the others."""
    found: dict[str, Path] = {}
    rejected: list[str] = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        if is_valid_entity_id(child.name):
            found[child.name] = child
        else:
            rejected.append(child.name)
    return found, rejected


def skipped_entity_dirs(root: Path) -> list[dict[str, str]]:
    """ROOT's subdirectories that a walk of ROOT skips because their names are not valid entity
    ids, each as {"path", "reason"} (path printable: undecodable bytes as `\\xNN`)."""
    if not root.is_dir():
        return []
    return [
        {"path": identity_path(root / name), "reason": f"{identity_path(name)!r} is not a valid entity id ({ENTITY_ID_RULE})"}
        for name in _entity_dirs(root)[1]
    ]


def walk_files(entity_root: Path) -> Iterator[SourceFile]:
    """Every regular file under `entity_root`, sorted, skipping hidden names and escaping links."""
    prefix = len(os.path.join(str(entity_root), ""))  # every path below is built on this string
    for entry in walk_entries(entity_root):
        yield SourceFile(identity_path(entry.path[prefix:]), Path(entry.path))


def walk_entries(entity_root: Path) -> Iterator[os.DirEntry[str]]:
    """walk_files' files as the `os.DirEntry`s scandir gave (cheaper: progress counts use it).

    A directory is entered once (by device and inode: a link loop ends there); a link is
    followed only if it resolves inside the root, whose real path is computed on the first link
    met (realpath() costs a stat per path component, and most trees have no link at all)."""
    root = str(entity_root)
    root_real = ""

    def inside(path: str) -> bool:
        nonlocal root_real
        if not root_real:
            root_real = os.path.realpath(root)
        real = os.path.realpath(path)
        return real == root_real or real.startswith(root_real + os.sep)

    try:
        st = os.stat(root)
    except OSError:
        return
    visited: set[tuple[int, int]] = set()
    stack = [(root, (st.st_dev, st.st_ino))]
    while stack:
        directory, key = stack.pop()
        if key in visited:
            continue  # a link loop
        visited.add(key)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() and not inside(entry.path):
                continue
            try:
                if entry.is_dir():
                    est = entry.stat()
                    subdirs.append((entry.path, (est.st_dev, est.st_ino)))
                elif entry.is_file():
                    yield entry
            except OSError:
                continue
        stack.extend(reversed(subdirs))
