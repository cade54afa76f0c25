"""One entity's chunk texts and their full-text index, in `chunks.sqlite`.

    chunks(id INTEGER PRIMARY KEY = vector id, doc_id, ord, text)
    chunks_fts: FTS5 over chunks.text (external content: the text is stored once)

Rows and their full-text entries are written and deleted in ONE transaction
(`synchronous=FULL`), so a kill -9 at any instant leaves the two in agreement. Tokenizer:
`porter unicode61 remove_diacritics 2` - identifiers split at `.`, `:`, `_` and other
punctuation (`std::ptr::NonNull` -> std, ptr, nonnull), and a query identifier becomes the
phrase of its parts, so `fs.readFile`, `ERR_INVALID_ARG` or just `readFile` all match; Porter
stemming lets "indexes" find "indexing".

Readers open read-write but never create: a kill -9 inside a write transaction leaves a hot
journal that only a writable connection can roll back (mode=ro fails on it with "attempt to
write a readonly database"). A database a kill left between its creation and its first table
reads as empty.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ragctl.errors import StorageError

if TYPE_CHECKING:
    import numpy as np

FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL,"
    " ord INTEGER NOT NULL, text TEXT NOT NULL)"
)
_FTS_SCHEMA = (
    "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id',"
    f" tokenize='{FTS_TOKENIZER}')"
)
_BATCH = 500


class ChunkTexts:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def _db(self, reader: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection; sqlite errors (disk full, I/O, corruption) become StorageError."""
        try:
            if reader:
                conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=60, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            with closing(conn):
                conn.execute("PRAGMA synchronous=FULL")
                yield conn
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction with the schema (tables and full-text index) in place."""
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_SCHEMA)
                _ensure_fts(conn)
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ------------------------------------------------------------------ writes
    def insert(self, rows: Sequence[tuple[int, str, int, str]]) -> None:
        """Insert (id, doc_id, ord, text) rows and their full-text entries, one transaction."""
        if not rows:
            return
        with self._write() as conn:
            _fts_forget(conn, [r[0] for r in rows])  # an id being replaced (never expected)
            conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?,?,?,?)", rows)
            conn.executemany("INSERT INTO chunks_fts(rowid, text) VALUES (?,?)", [(r[0], r[3]) for r in rows])

    def delete(self, ids: Iterable[int]) -> None:
        """Delete rows and their full-text entries, one transaction."""
        ids = [int(i) for i in ids]
        if not ids or not self.exists():
            return
        with self._write() as conn:
            _fts_forget(conn, ids)
            conn.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in ids])

    def ensure_full_text(self) -> bool:
        """Build the full-text index of a store made before it existed. True if built."""
        if not self.exists():
            return False
        with self._db(reader=True) as conn:
            if not _has_table(conn, "chunks") or _has_table(conn, "chunks_fts"):
                return False
        with self._write():
            pass
        return True

    def rebuild_full_text(self) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('rebuild')")

    # ------------------------------------------------------------------ reads
    def fetch(self, ids: Sequence[int]) -> dict[int, str]:
        if not len(ids) or not self.exists():
            return {}
        with self._db(reader=True) as conn:
            if not _has_table(conn, "chunks"):
                return {}
            out: dict[int, str] = {}
            ids = [int(i) for i in ids]
            for start in range(0, len(ids), _BATCH):
                part = ids[start : start + _BATCH]
                marks = ",".join("?" * len(part))
                out.update(conn.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks})", part).fetchall())
            return out

    def row_ids(self) -> np.ndarray:
        """Every row id, sorted (int64)."""
        import numpy as np

        if not self.exists():
            return np.empty(0, dtype=np.int64)
        with self._db(reader=True) as conn:
            if not _has_table(conn, "chunks"):
                return np.empty(0, dtype=np.int64)
            return np.fromiter((r[0] for r in conn.execute("SELECT id FROM chunks ORDER BY id")), dtype=np.int64)

    def max_id(self) -> int:
        if not self.exists():
            return -1
        with self._db(reader=True) as conn:
            if not _has_table(conn, "chunks"):
                return -1
            row = conn.execute("SELECT MAX(id) FROM chunks").fetchone()
        return -1 if row[0] is None else int(row[0])

    def full_text_state(self) -> str:
        """"ok", "missing" (store made before the full-text index) or "inconsistent"."""
        if not self.exists():
            return "ok"
        with self._db(reader=True) as conn:
            if not _has_table(conn, "chunks"):
                return "ok"
            if not _has_table(conn, "chunks_fts"):
                return "missing"
            try:  # rank=1: compare the index with the content table too
                conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES('integrity-check', 1)")
            except sqlite3.DatabaseError:
                return "inconsistent"
        return "ok"

    def search(self, expression: str, limit: int) -> list[tuple[int, float]]:
        """(id, bm25 score: higher is better) for an FTS5 MATCH expression, best first."""
        if not expression or limit < 1 or not self.exists():
            return []
        self.ensure_full_text()
        with self._db(reader=True) as conn:
            if not _has_table(conn, "chunks_fts"):
                return []
            rows = conn.execute(
                "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank, rowid LIMIT ?",
                (expression, limit),
            ).fetchall()
        return [(int(i), -float(r)) for i, r in rows]


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def _ensure_fts(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: create the full-text index, filled from existing rows."""
    if not _has_table(conn, "chunks_fts"):
        conn.execute(_FTS_SCHEMA)
        conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('rebuild')")


def _fts_forget(conn: sqlite3.Connection, ids: list[int]) -> None:
    # External content: an entry is deleted by giving the exact text it was indexed with.
    for start in range(0, len(ids), _BATCH):
        part = ids[start : start + _BATCH]
        marks = ",".join("?" * len(part))
        conn.execute(
            "INSERT INTO chunks_fts(chunks_fts, rowid, text) "
            f"SELECT 'delete', id, text FROM chunks WHERE id IN ({marks})",
            part,
        )


# --------------------------------------------------------------------------- query text
_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have if in into is it its of on or such that the"
    " their then there these they this to was were will with which you your we our can not no"
    " do does did so than also may been being".split()
)
_WORD = re.compile(r"\w+")
MAX_TERMS = 32


def match_expression(text: str) -> str:
    """An FTS5 expression for free text: the OR of its terms, each quoted (so no user input is
    ever read as FTS syntax: quotes, `*`, `-`, `:`, parentheses, NEAR, AND are plain text).
    A token with inner punctuation (`fs.readFile`, `std::ptr::NonNull`) becomes the phrase of
    its parts. Common English words are left out unless nothing else remains."""
    terms: list[str] = []
    fallback: list[str] = []
    for token in text.split():
        parts = _WORD.findall(token)
        if not parts:
            continue
        term = '"' + " ".join(parts) + '"'
        (fallback if len(parts) == 1 and parts[0].lower() in _STOPWORDS else terms).append(term)
    chosen = list(dict.fromkeys(terms or fallback))[:MAX_TERMS]
    return " OR ".join(chosen)
