"""One entity's chunk texts and their full-text index, in `chunks.sqlite`.

    chunks(id INTEGER PRIMARY KEY = vector id, doc_id, ord, text, title, section, page, ocr)
    chunks_fts: FTS5 over chunks.text, title, section (external content: stored once)

`title` is the document's title and `section` the chunk's heading path in it (contextual
chunks, `ragctl.chunking`); a database made before they existed has neither column. Readers
answer from it as it is (empty title/section, full-text over the text alone); the first write
adds both columns (empty) and rebuilds the full-text index with them, in one transaction.
`page` (1-based, NULL where the format has no pages) and `ocr` (1: the text was recognised from
a page image) say where a chunk comes from; a database made before them gains both columns
(NULL / 0) on its first write, without touching the full-text index.

`passage` is `passage_key(text)`: the first 16 bytes of the sha256 of the chunk text with its
white space collapsed. The embed stage looks a new chunk's key up to reuse the vector of a row
holding the same passage, and queries collapse hits with equal keys (docs/storage.md,
"Passages"). Its holders are found through the vector segments' passage sections
(`EntityStore.holders`); the SQL index `chunks_passage` is kept only while a live segment
has no section (a store made before them): a commit drops it once every segment has one
(`insert(passage_index=False)`), as it cost a commit ~600 random page writes at 1M chunks. A
database made before the column gains it (and the index) on its first write and every
existing row its key, in that same transaction; until then readers find no holders and
compute the keys of the hits themselves.

`near` is `ragctl.passages.near_signature(text)`: the chunk's plain-word count and the hashes of
its early word windows, what a query needs to find near-duplicates among its candidates without
tokenizing them (~100 bytes a chunk). A database made before it gains the column, and every row
its signature, on its first write (one transaction, ~40 us a row); until then queries compute
the signatures of their candidates themselves.

Rows and their full-text entries are written and deleted in ONE transaction
(`synchronous=FULL`), so a kill -9 at any instant leaves the two in agreement. Tokenizer:
`unicode61 remove_diacritics 2` - identifiers split at `.`, `:`, `_` and other punctuation
(`std::ptr::NonNull` -> std, ptr, nonnull), and a query identifier becomes the phrase of its
parts, so `fs.readFile`, `ERR_INVALID_ARG` or just `readFile` all match.

No stemming: query words are looked up in the index's vocabulary (`chunks_vocab`) to skip
words that occur in most chunks, which needs query tokens to equal index tokens; identifiers
are not English words either. Meaning-level matching is the vector side's job in hybrid mode.

Readers open read-write but never create: a kill -9 inside a write transaction leaves a hot
journal that only a writable connection can roll back (mode=ro fails on it with "attempt to
write a readonly database"). A database a kill left between its creation and its first table
reads as empty.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.errors import StorageError
from ragctl.storage.vector_index import file_signature

if TYPE_CHECKING:
    import numpy as np

FTS_TOKENIZER = "unicode61 remove_diacritics 2"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL,"
    " ord INTEGER NOT NULL, text TEXT NOT NULL, title TEXT NOT NULL DEFAULT '',"
    " section TEXT NOT NULL DEFAULT '', page INTEGER, ocr INTEGER NOT NULL DEFAULT 0, passage BLOB, near BLOB)"
)
_PASSAGE_INDEX = "CREATE INDEX IF NOT EXISTS chunks_passage ON chunks(passage)"
_DROP_PASSAGE_INDEX = "DROP INDEX IF EXISTS chunks_passage"
_CONTEXT_COLUMNS = ("title", "section")
_ORIGIN_COLUMNS = {"page": "INTEGER", "ocr": "INTEGER NOT NULL DEFAULT 0"}
_FTS_SCHEMA = (
    "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, title, section, content='chunks', content_rowid='id',"
    f" tokenize='{FTS_TOKENIZER}')"
)
# bm25 weight of each full-text column (text, title, section): a word of the heading path counts
# like one of the text; the title, shared by every chunk of a document, counts less
# (docs/retrieval.md, "Contextual chunks").
FTS_WEIGHTS = (1.0, 0.5, 1.0)
_BATCH = 500
# A small database (a tenant of a few chunks) costs ~5 KB, not ~28 KB: it starts with 512-byte
# pages (each b-tree - rows, passage index, the full-text tables, the schema - takes at least
# a page), and its full-text index keeps no table of column sizes (`columnsize=0`: bm25 then
# tokenizes the matched rows to learn their lengths - the same scores, a little slower, which
# at a few hundred rows costs nothing). Once it passes GROW_AT_BYTES it is rewritten, once,
# after a commit: the full-text index rebuilt with its sizes table, then VACUUM into 4 KB
# pages, the sizes a big entity's b-trees want (_grow).
NEW_PAGE_SIZE = 512
GROWN_PAGE_SIZE = 4096
GROW_AT_BYTES = 256 * 1024

# (id, doc_id, ord, text), (id, doc_id, ord, text, title, section) or
# (id, doc_id, ord, text, title, section, page, ocr)
Row = (tuple[int, str, int, str] | tuple[int, str, int, str, str, str]
       | tuple[int, str, int, str, str, str, int | None, bool])
# what a reader gets per id: (text, title, section, page, ocr)
RowData = tuple[str, str, str, int | None, bool]


class ChunkTexts:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # per database version (file signature): row count, token document frequencies and
        # the chunks table's columns (a database made before title/section, page/ocr or passage)
        self._cache_sig: object = None
        self._rows: int | None = None
        self._df: dict[str, int] = {}
        self._columns: frozenset[str] | None = None
        self._grow_failed_at: int | None = None  # file size at a failed _grow (retried at twice that)
        self._session = threading.local()  # .conn: this thread's reader connection inside `reading()`

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Inside it, this thread's reads share one connection (a query makes four or five reads:
        ~0.1 ms each to open a connection). Nests; writes still open their own."""
        if getattr(self._session, "conn", None) is not None or not self.exists():
            yield
            return
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        with closing(conn):
            self._session.conn = conn
            try:
                yield
            finally:
                self._session.conn = None
                self._session.columns = self._session.full_text = None

    @contextmanager
    def _db(self, reader: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection; sqlite errors (disk full, I/O, corruption) become StorageError."""
        shared = getattr(self._session, "conn", None) if reader else None
        if shared is not None:
            try:
                yield shared
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: {exc}") from exc
            return
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
    def _write(self, adding_bytes: int = 0) -> Iterator[sqlite3.Connection]:
        """One write transaction with the schema (tables and full-text index) in place."""
        with self._db() as conn:
            # a new database starts small, unless its first write alone is big (`adding_bytes`)
            new = not conn.execute("PRAGMA page_count").fetchone()[0]
            small = new and adding_bytes < GROW_AT_BYTES // 4
            if small:
                conn.execute(f"PRAGMA page_size={NEW_PAGE_SIZE}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_SCHEMA)
                _add_context_columns(conn)
                _add_origin_columns(conn)
                _add_passage_column(conn)
                _add_near_column(conn)
                _ensure_fts(conn, small=small)
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            try:
                size = os.path.getsize(self.path)
            except OSError:
                size = 0
            if self._grow_failed_at is None or size >= 2 * self._grow_failed_at:
                self._grow_failed_at = None if _grow(conn) else max(size, 1)

    # ------------------------------------------------------------------ writes
    def insert(self, rows: Sequence[Row], signatures: Sequence[tuple[bytes, bytes] | None] = (),
               passage_index: bool | None = None) -> None:
        """Insert (id, doc_id, ord, text[, title, section[, page, ocr]]) rows and their
        full-text entries, one transaction. `signatures`: each row's (passage key, near
        signature) where the caller made them (None or missing: computed here).
        `passage_index`: create (True) or drop (False) the SQL index over passage keys in
        that transaction (None: leave it as it is)."""
        if not rows:
            return
        from ragctl.passages import near_signature

        pad = {4: ("", "", None, 0), 6: (None, 0), 8: ()}
        full = [(*r, *pad[len(r)]) for r in rows]
        given = list(signatures) + [None] * (len(full) - len(signatures))
        made = [sig if sig is not None else (passage_key(r[3]), near_signature(r[3])) for r, sig in zip(full, given)]
        with self._write(sum(len(r[3]) + len(r[4]) + len(r[5]) for r in full)) as conn:
            if passage_index is not None:
                conn.execute(_PASSAGE_INDEX if passage_index else _DROP_PASSAGE_INDEX)
            _fts_forget(conn, [r[0] for r in full])  # an id being replaced (never expected)
            conn.executemany(
                "INSERT OR REPLACE INTO chunks(id, doc_id, ord, text, title, section, page, ocr, passage, near)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(*r[:7], int(bool(r[7])), *sig) for r, sig in zip(full, made)])
            conn.executemany(
                "INSERT INTO chunks_fts(rowid, text, title, section) VALUES (?,?,?,?)",
                [(r[0], r[3], r[4], r[5]) for r in full],
            )

    def delete(self, ids: Iterable[int]) -> None:
        """Delete rows and their full-text entries, one transaction."""
        ids = [int(i) for i in ids]
        if not ids or not self.exists():
            return
        with self._write() as conn:
            _fts_forget(conn, ids)
            conn.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in ids])

    def ensure_full_text(self) -> bool:
        """Build the full-text index of a store made before it existed (or before its context
        columns existed). True if built."""
        if not self.exists():
            return False
        with self._db(reader=True) as conn:
            if not _has_table(conn, "chunks") or (_has_table(conn, "chunks_vocab") and _has_context(conn)):
                return False
        with self._write():
            pass
        return True

    def ensure_passages(self) -> bool:
        """Key the rows of a database made before passage keys (the upgrade its next write
        would do; the embed stage calls it before looking passages up). True if it did."""
        if not self.exists():
            return False
        with self._db(reader=True) as conn:
            if not _has_table(conn, "chunks") or _has_passage(conn):
                return False
        with self._write():
            pass
        return True

    def drop_passage_index(self) -> bool:
        """Drop the SQL index over passage keys (every live segment has a passage section
        now). True if there was one."""
        if not self.has_passage_index():
            return False
        with self._write() as conn:
            conn.execute(_DROP_PASSAGE_INDEX)
        return True

    def has_passage_index(self) -> bool:
        if not self.exists():
            return False
        with self._db(reader=True) as conn:
            return _has_passage_index(conn)

    def rebuild_full_text(self) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('rebuild')")

    # ------------------------------------------------------------------ reads
    def fetch(self, ids: Sequence[int]) -> dict[int, str]:
        """id -> chunk text."""
        return {i: row[0] for i, row in self.fetch_rows(ids).items()}

    def fetch_rows(self, ids: Sequence[int]) -> dict[int, RowData]:
        """id -> (text, title, section, page, ocr); title and section are "" in a database made
        before contextual chunks, page None and ocr False in one made before page numbers."""
        def columns(have: frozenset[str]) -> str:
            return (("text, title, section" if set(_CONTEXT_COLUMNS) <= have else "text, '', ''")
                    + (", page, ocr" if set(_ORIGIN_COLUMNS) <= have else ", NULL, 0"))

        return {i: (r[0], r[1], r[2], r[3], bool(r[4])) for i, r in self._read_rows(ids, columns).items()}

    def signatures(self, ids: Sequence[int]) -> dict[int, tuple[bytes | None, bytes | None]]:
        """id -> (passage key, near signature), without the texts: what a query collapsing its
        candidates reads (None where a database not upgraded yet has neither)."""
        def columns(have: frozenset[str]) -> str:
            return ("passage" if "passage" in have else "NULL") + ", " + ("near" if "near" in have else "NULL")

        return {i: (r[0], r[1]) for i, r in self._read_rows(ids, columns).items()}

    def _read_rows(self, ids: Sequence[int], columns: Callable[[frozenset[str]], str]) -> dict[int, tuple[Any, ...]]:
        """id -> the values of `columns(the table's columns)` for the rows that exist."""
        if not len(ids) or not self.exists():
            return {}
        with self._db(reader=True) as conn:
            have = self._chunk_columns(conn)
            if have is None:
                return {}
            wanted = columns(have)
            return {int(r[0]): tuple(r[1:]) for r in _select_in(conn, f"id, {wanted}", "id", [int(i) for i in ids])}

    def passages(self, ids: Sequence[int]) -> dict[int, bytes]:
        """id -> passage key, for rows that have one (none in a database not upgraded yet)."""
        if not len(ids) or not self.exists():
            return {}
        with self._db(reader=True) as conn:
            if "passage" not in (self._chunk_columns(conn) or ()):
                return {}
            return {int(r[0]): bytes(r[1])
                    for r in _select_in(conn, "id, passage", "id", [int(i) for i in ids], "AND passage IS NOT NULL")}

    def keyed_rows(self, ids: Sequence[int]) -> list[tuple[int, bytes, str, int]]:
        """(id, passage key, doc_id, ord) of the rows of these ids that have a key."""
        if not len(ids) or not self.exists():
            return []
        with self._db(reader=True) as conn:
            if "passage" not in (self._chunk_columns(conn) or ()):
                return []
            return [(int(i), bytes(key), str(doc_id), int(ord_)) for i, key, doc_id, ord_
                    in _select_in(conn, "id, passage, doc_id, ord", "id", [int(i) for i in ids], "AND passage IS NOT NULL")]

    def holders(self, keys: Sequence[bytes]) -> dict[bytes, list[tuple[int, str, int]]]:
        """passage key -> the rows holding it: (id, doc_id, ord), oldest id first, through the
        SQL index (`EntityStore.holders` uses the segments' passage sections where it can).
        Rows of replaced or removed documents are included (the caller checks they are still
        mapped); a database not upgraded yet has no holders."""
        if not len(keys) or not self.exists():
            return {}
        with self._db(reader=True) as conn:
            if "passage" not in (self._chunk_columns(conn) or ()):
                return {}
            out: dict[bytes, list[tuple[int, str, int]]] = {}
            unique = list(dict.fromkeys(bytes(k) for k in keys))
            for key, vid, doc_id, ord_ in _select_in(conn, "passage, id, doc_id, ord", "passage", unique, "ORDER BY id"):
                out.setdefault(bytes(key), []).append((int(vid), str(doc_id), int(ord_)))
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
            if not _has_table(conn, "chunks_fts") or not _has_table(conn, "chunks_vocab"):
                return "missing"
            try:  # rank=1: compare the index with the content table too
                conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES('integrity-check', 1)")
            except sqlite3.DatabaseError:
                return "inconsistent"
        return "ok"

    def search(self, text: str, limit: int) -> list[tuple[int, float]]:
        """(id, bm25 score: higher is better) for free text, best first (see choose_terms).
        The text, the document title and the heading path are searched (FTS_WEIGHTS)."""
        terms = query_terms(text)
        if not terms or limit < 1 or not self.exists():
            return []
        with self._db(reader=True) as conn:
            ready = self._full_text(conn) is not None
        if not ready:
            self.ensure_full_text()  # a format-1 store: no full-text index yet (built once)
        with self._db(reader=True) as conn:
            with_context = self._full_text(conn)
            if with_context is None:
                return []
            df = self._document_frequencies(conn, sorted({p for t in terms for p in t}))
            chosen = choose_terms(terms, df, self._row_count(conn))
            if not chosen:
                return []
            rank = "bm25(chunks_fts, {}, {}, {})".format(*FTS_WEIGHTS) if with_context else "rank"
            rows = conn.execute(
                f"SELECT rowid, {rank} AS score FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY score, rowid LIMIT ?",
                (match_expression(chosen), limit),
            ).fetchall()
        return [(int(i), -float(r)) for i, r in rows]

    def _full_text(self, conn: sqlite3.Connection) -> bool | None:
        """None: no full-text index yet; else whether it indexes the context columns."""
        found: bool | None = self._per_session(
            conn, "full_text", lambda c: _fts_has_context(c) if _has_table(c, "chunks_vocab") else None)
        return found

    def _chunk_columns(self, conn: sqlite3.Connection) -> frozenset[str] | None:
        """The chunks table's columns, None where it does not exist yet."""
        columns: frozenset[str] | None = self._per_session(
            conn, "columns", lambda c: self._table_columns(c) if _has_table(c, "chunks") else None)
        return columns

    def _per_session(self, conn: sqlite3.Connection, name: str, compute: Callable[[sqlite3.Connection], Any]) -> Any:
        """`compute(conn)`; inside `reading()`, on its connection, computed once for the session
        (a query reads four or five times) unless it was None (not there yet)."""
        session = self._session
        mine = getattr(session, "conn", None) is conn
        if mine and getattr(session, name, None) is not None:
            return getattr(session, name)
        value = compute(conn)
        if mine and value is not None:
            setattr(session, name, value)
        return value

    def _table_columns(self, conn: sqlite3.Connection) -> frozenset[str]:
        """The chunks table's columns, read once per database version."""
        self._check_cache()
        if self._columns is None:
            self._columns = _columns(conn)
        return self._columns

    def _row_count(self, conn: sqlite3.Connection) -> int:
        self._check_cache()
        if self._rows is None:
            self._rows = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
        return self._rows

    def _document_frequencies(self, conn: sqlite3.Connection, parts: list[str]) -> dict[str, int]:
        """Rows each token occurs in. fts5vocab counts by reading the token's whole posting
        list (15 ms for a token in 95% of 100k rows), so counts are cached until the database
        changes; a common word costs once per process and version."""
        self._check_cache()
        missing = [p for p in parts if p not in self._df]
        for start in range(0, len(missing), _BATCH):
            part = missing[start : start + _BATCH]
            marks = ",".join("?" * len(part))
            found = dict(conn.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", part).fetchall())
            self._df.update({p: int(found.get(p, 0)) for p in part})
        return {p: self._df[p] for p in parts}

    def _check_cache(self) -> None:
        sig = file_signature(self.path)
        if sig != self._cache_sig:
            self._cache_sig, self._rows, self._df, self._columns = sig, None, {}, None


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def _columns(conn: sqlite3.Connection) -> frozenset[str]:
    """The chunks table's columns."""
    return frozenset(row[1] for row in conn.execute("PRAGMA table_info(chunks)"))


def _select_in(conn: sqlite3.Connection, select: str, column: str, values: Sequence[Any], tail: str = "") -> Iterator[Any]:
    """`SELECT {select} FROM chunks WHERE {column} IN (...) {tail}`, _BATCH values a query."""
    for start in range(0, len(values), _BATCH):
        part = list(values[start : start + _BATCH])
        marks = ",".join("?" * len(part))
        yield from conn.execute(f"SELECT {select} FROM chunks WHERE {column} IN ({marks}) {tail}", part)


def _has_context(conn: sqlite3.Connection) -> bool:
    """Whether the chunks table has the title and section columns."""
    return set(_CONTEXT_COLUMNS) <= _columns(conn)


def _add_origin_columns(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: a database made before page numbers gains page and ocr."""
    columns = _columns(conn)
    for column, kind in _ORIGIN_COLUMNS.items():
        if column not in columns:
            conn.execute(f"ALTER TABLE chunks ADD COLUMN {column} {kind}")


def _has_passage(conn: sqlite3.Connection) -> bool:
    return "passage" in _columns(conn)


def _add_passage_column(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: a database made before passage keys gains the column, every
    row its key (computed from its text), and the index (its segments have no passage
    sections); all or nothing with the write."""
    if not _has_passage(conn):
        _add_computed_column(conn, "passage", passage_key)
        conn.execute(_PASSAGE_INDEX)


def _has_passage_index(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'chunks_passage'").fetchone() is not None


def _add_near_column(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: a database made before near-duplicate signatures gains the
    column and every row its signature (computed from its text); all or nothing with the write."""
    from ragctl.passages import near_signature

    if "near" not in _columns(conn):
        _add_computed_column(conn, "near", near_signature)


def _add_computed_column(conn: sqlite3.Connection, column: str, compute: Callable[[str], bytes]) -> None:
    """Inside a write transaction: a BLOB column, filled for every row from its text."""
    conn.execute(f"ALTER TABLE chunks ADD COLUMN {column} BLOB")
    last = -(1 << 62)
    while True:  # in id order, a page at a time (no cursor open over rows being updated)
        part = conn.execute("SELECT id, text FROM chunks WHERE id > ? ORDER BY id LIMIT 5000", (last,)).fetchall()
        if not part:
            break
        conn.executemany(f"UPDATE chunks SET {column} = ? WHERE id = ?", [(compute(t), i) for i, t in part])
        last = part[-1][0]


def passage_key(text: str) -> bytes:
    """A chunk's passage: 16 bytes of the sha256 of its text with white space collapsed (so a
    copy that differs only in line breaks or indentation is the same passage)."""
    import hashlib

    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).digest()[:16]


def _grow(conn: sqlite3.Connection) -> bool:
    """After a commit: a small database past GROW_AT_BYTES gets its full-text index rebuilt with
    column sizes (one transaction), then is rewritten with big pages (VACUUM: atomic under the
    rollback journal like any other write). Either step only speeds later reads, and a kill
    between them leaves a database the next commit finishes. False if it failed (disk full:
    VACUUM needs a copy's room): the caller retries once the file has doubled, not on every
    commit, since each try copies the database under the entity's lock."""
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        if page_size >= GROWN_PAGE_SIZE or page_size * conn.execute("PRAGMA page_count").fetchone()[0] < GROW_AT_BYTES:
            return True
        if _fts_without_sizes(conn):
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DROP TABLE IF EXISTS chunks_vocab")
                conn.execute("DROP TABLE chunks_fts")
                _ensure_fts(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        conn.execute(f"PRAGMA page_size={GROWN_PAGE_SIZE}")
        conn.execute("VACUUM")
    except sqlite3.Error:
        return False
    return True


def _fts_without_sizes(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'").fetchone()
    return row is not None and "columnsize=0" in (row[0] or "")


def _fts_has_context(conn: sqlite3.Connection) -> bool:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(chunks_fts)")}
    return set(_CONTEXT_COLUMNS) <= columns


def _add_context_columns(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: a database made before contextual chunks gains the title and
    section columns (empty), and its full-text index is dropped, to be rebuilt with them."""
    if _has_context(conn):
        return
    for column in _CONTEXT_COLUMNS:
        conn.execute(f"ALTER TABLE chunks ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
    conn.execute("DROP TABLE IF EXISTS chunks_vocab")
    conn.execute("DROP TABLE IF EXISTS chunks_fts")


def _ensure_fts(conn: sqlite3.Connection, small: bool = False) -> None:
    """Inside a write transaction: create the full-text index, filled from existing rows
    (`small`: a new database's, without its column sizes table, see NEW_PAGE_SIZE)."""
    if not _has_table(conn, "chunks_fts"):
        conn.execute(_FTS_SCHEMA[:-1] + ", columnsize=0)" if small else _FTS_SCHEMA)
        conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('rebuild')")
    if not _has_table(conn, "chunks_vocab"):  # document frequencies, read by search()
        conn.execute("CREATE VIRTUAL TABLE chunks_vocab USING fts5vocab(chunks_fts, 'row')")


def _fts_forget(conn: sqlite3.Connection, ids: list[int]) -> None:
    # External content: an entry is deleted by giving the exact text it was indexed with.
    for start in range(0, len(ids), _BATCH):
        part = ids[start : start + _BATCH]
        marks = ",".join("?" * len(part))
        conn.execute(
            "INSERT INTO chunks_fts(chunks_fts, rowid, text, title, section) "
            f"SELECT 'delete', id, text, title, section FROM chunks WHERE id IN ({marks})",
            part,
        )


# --------------------------------------------------------------------------- query text
_WORD = re.compile(r"[^\W_]+")  # what unicode61 keeps: letters and digits (`_` separates)
MAX_TERMS = 32
MAX_POSTINGS = 10_000  # rows the full-text query may score (~1-3 us each); rarest terms first


# Words that say how a question is asked, not what it is about: English function words,
# pronouns, auxiliaries and question words ("how do I ...", "can my ... be", "what should I
# ..."), plus a few words of intent ("want", "need", "get", "way", "just"). They occur in a large
# share of chunks, so bm25 gives each a little weight, and OR-ed into a question's query they
# pull in chunks that share only the phrasing. Measured on the question sets
# (docs/retrieval.md, "Query words"): hybrid MRR on the Cargo Book 0.65 -> 0.71, evidence hit@5
# on the Embedded Rust Book 0.66 -> 0.72 (17 questions up, 7 down; one left the top 5). Not in
# the list on purpose: "use" (a Rust and Python keyword). Keywords that are also English
# (`with`, `where`, `for`, `if`, `get`) are searched when written as code, in backticks; plain,
# they are phrasing. A query made of nothing else keeps them all.
_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can cannot could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not of off on once only or other ought our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    get want need way also""".split()
)


def query_terms(text: str) -> list[tuple[str, ...]]:
    """The terms of free text, each a tuple of index tokens: a plain word is one token, a
    token with inner punctuation (`fs.readFile`, `std::ptr::NonNull`, `ERR_INVALID_ARG`) the
    phrase of its parts. Nothing of the input is ever read as FTS syntax. The commonest
    English words are left out (they would be dropped by document frequency anyway, after
    costing a vocabulary lookup), unless written as code (`with`); a query of nothing else
    keeps them."""
    terms: list[tuple[str, ...]] = []
    meant: set[tuple[str, ...]] = set()  # terms with at least one occurrence that is not phrasing
    for token in text.split():
        parts = tuple(_fold(p) for p in _WORD.findall(token))
        if parts:
            terms.append(parts)
            if not _is_phrasing(token, parts):
                meant.add(parts)
    terms = list(dict.fromkeys(terms))
    content = [t for t in terms if t in meant]
    return content or terms


_CONTRACTED = frozenset("t s m re ve ll d".split())  # don't, it's, I'm, you're, I've, we'll, I'd
_NEGATED = frozenset("aren couldn didn doesn don hadn hasn haven isn mustn shouldn wasn weren won wouldn".split())


def _is_phrasing(token: str, parts: tuple[str, ...]) -> bool:
    """A stop word, or a contraction of one written with an apostrophe ("don't", "what's",
    "I'm": two index tokens; `off_t` is not one); never a word written as code (`with`)."""
    if "`" in token:
        return False
    if len(parts) == 1:
        return parts[0] in _STOPWORDS
    return (len(parts) == 2 and ("'" in token or "’" in token) and parts[1] in _CONTRACTED
            and (parts[0] in _STOPWORDS or parts[0] in _NEGATED))


def match_expression(terms: Sequence[tuple[str, ...]]) -> str:
    """The OR of the terms, each a quoted phrase (quotes cannot occur inside a term)."""
    return " OR ".join('"' + " ".join(t) + '"' for t in terms[:MAX_TERMS])


def _fold(word: str) -> str:
    """A word as unicode61 (remove_diacritics 2) indexes it: lower case, no diacritics."""
    import unicodedata

    word = word.lower()
    if word.isascii():
        return word
    return "".join(ch for ch in unicodedata.normalize("NFD", word) if not unicodedata.combining(ch))


def choose_terms(terms: list[tuple[str, ...]], df: dict[str, int], rows: int) -> list[tuple[str, ...]]:
    """Terms worth scoring, rarest first: a term found nowhere is dropped; one in more than half
    of the rows is dropped too (bm25 gives it no weight, yet scoring its rows costs the most);
    then terms are taken while the rows to score stay within MAX_POSTINGS (at least one)."""
    scored = []
    for term in terms:
        n = min(df.get(part, 0) for part in term)  # a phrase occurs at most where its rarest part does
        if n == 0 or (rows > 4 and n > rows / 2):
            continue
        scored.append((n, term))
    scored.sort(key=lambda x: x[0])
    chosen: list[tuple[str, ...]] = []
    total = 0
    for n, term in scored:
        if chosen and total + n > MAX_POSTINGS:
            break
        chosen.append(term)
        total += n
    return chosen
