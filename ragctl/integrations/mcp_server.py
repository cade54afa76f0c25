"""`ragctl mcp`: a store's entities as Model Context Protocol tools, over stdio.

Three tools, built on the official `mcp` SDK (`MCPServer`, the SDK's high-level server):

* `list_entities`: the entities this server may show, with document and chunk counts;
* `search(entity, query, k, mode)`: top-k chunks of one entity (`ragctl.query.Searcher`, one per
  entity, cached; every searcher shares the process's one model, `load_embedder`'s cache);
* `get_document(entity, path_or_doc_id)`: one document's chunks, in order.

`StoreTools` is the logic (no MCP in it); `build_server` wraps it for the SDK. The server only
reads: it never creates, upgrades or repairs anything in the store (an entity whose full-text
index predates this ragctl is refused in text/hybrid mode instead of being built here). Entities
outside `entities` are invisible: listed nowhere, "unknown entity" when named. A bad argument is
a tool error (`isError` result, one line), never a crash. Only protocol goes to stdout; the
SDK diverts file descriptor 1 to stderr while it serves, so a stray print or a native library's
warning cannot corrupt the stream, and logs go to stderr.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field

from ragctl import __version__
from ragctl.errors import RagctlError, UsageError
from ragctl.ids import validate_entity_id
from ragctl.model_config import ModelConfig
from ragctl.query import CONTEXT_WORDS_MAX, MODES
from ragctl.storage.entity import EntityStore
from ragctl.storage.json_storage import open_store
from ragctl.storage.layout import StoreLayout, require_store

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from ragctl.query import Searcher
    from ragctl.storage.json_storage import JSONStorage

K_MAX = 50
DEFAULT_K = 5
LIST_LIMIT = 100  # list_entities: entities per answer by default
LIST_LIMIT_MAX = 1000

INSTRUCTIONS = (
    "Search document collections indexed by ragctl. Each entity (a customer, project or tenant) "
    "is a separate collection: call list_entities first, then search one entity; search hits "
    "name a document path you can read in full with get_document."
)


# ---------------------------------------------------------------------- results (the tools' schemas)
class EntitySummary(BaseModel):
    entity: str = Field(description="Entity id, as the search and get_document tools take it.")
    documents: int = Field(description="Documents indexed in this entity.")
    chunks: int = Field(description="Chunks (searchable passages) over all its documents.")
    model: str | None = Field(description="Embedding model the entity was indexed with.")


class EntityList(BaseModel):
    entities: list[EntitySummary]
    total: int = Field(0, description="How many entities match (this list is one page of them, sorted by id).")


class SearchHit(BaseModel):
    rank: int = Field(description="1-based rank of this hit.")
    path: str = Field(description="The document's path inside its entity (get_document takes it).")
    doc_id: str = Field(description="The document's stable id (get_document takes it too).")
    title: str = Field(description="The document's title; empty when not known.")
    section: str = Field(description="Heading path of the chunk inside the document; empty when not known.")
    chunk: int = Field(description="0-based position of the best-ranked chunk in its document.")
    chunks: list[int] = Field(default_factory=list, description="0-based positions of the document's chunks in `text`, in document order.")
    page: int | None = Field(None, description="The page the chunk starts on (PDF pages, image frames); null when the format has no pages.")
    ocr: bool = Field(False, description="True when the chunk's text was recognised from a scanned page or image (OCR): expect recognition errors.")
    score: float = Field(description="Rank-fusion score (hybrid), cosine (vector) or bm25 (text); higher is better.")
    text: str = Field(description="The text of the hit's chunks (see chunks), in document order.")
    also_in: list[str] = Field(default_factory=list, description="Paths of the other documents holding the same passage "
                               "(or a near-duplicate); this hit is its most specific holder.")


class SearchResult(BaseModel):
    entity: str
    query: str
    mode: str
    hits: list[SearchHit]


class DocumentChunk(BaseModel):
    chunk: int = Field(description="0-based position in the document.")
    text: str


class Document(BaseModel):
    entity: str
    doc_id: str
    path: str
    name: str = Field(description="The file name.")
    chunk_count: int
    chunks: list[DocumentChunk] = Field(description="Every chunk of the document, in order.")


# ---------------------------------------------------------------------- the logic
class StoreTools:
    """Read-only answers over one store, restricted to the visible entities.

    `entities`: the entity ids this server may show (None: all of the store's). Each method
    raises `RagctlError` (one line) for anything the caller got wrong.
    """

    def __init__(self, store: Path, config: ModelConfig | None = None, entities: Iterable[str] | None = None,
                 search_cache_bytes: int | None = None) -> None:
        self.store = Path(store)
        require_store(self.store)
        self.config = config if config is not None else ModelConfig()
        self.visible = None if entities is None else frozenset(validate_entity_id(e) for e in entities)
        self._storage: JSONStorage = open_store(self.store, create=False)
        from ragctl.searchers import DEFAULT_MAX_BYTES, SearcherCache

        # bounded by bytes, like serve's (--search-cache-mb): 100,000 tenants searched once each
        # keep the most recent ones, not all of them
        self._searchers = SearcherCache(self.store, self.config, search_cache_bytes or DEFAULT_MAX_BYTES)
        self._full_text_checked: set[str] = set()

    # ------------------------------------------------------------------ entities
    def entity_ids(self) -> list[str]:
        """The visible entities that exist in the store now, sorted."""
        found = StoreLayout(self.store).entity_ids()
        return [e for e in found if self.visible is None or e in self.visible]

    def _entity(self, entity_id: str) -> EntityStore:
        validate_entity_id(entity_id)
        if self.visible is not None and entity_id not in self.visible:
            raise self._unknown(entity_id)
        entity = EntityStore(self._storage, entity_id)
        if not entity.exists():
            raise self._unknown(entity_id)
        return entity

    def _unknown(self, entity_id: str) -> UsageError:
        known = self.entity_ids()
        shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
        return UsageError(f"unknown entity {entity_id!r} (entities: {shown or 'none'})")

    def list_entities(self, filter: str = "", offset: int = 0, limit: int = LIST_LIMIT) -> EntityList:  # noqa: A002
        """From the store catalog (storage/catalog.py): no entity is opened. The visible
        entities whose id contains `filter` (case-insensitive), sorted by id, `limit` from
        `offset` (a store of 100,000 tenants is not one answer for a model to read)."""
        from ragctl.storage import catalog

        if not isinstance(filter, str) or len(filter) > 128:
            raise UsageError("filter must be text of at most 128 characters")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise UsageError(f"offset must be an integer >= 0, not {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT_MAX:
            raise UsageError(f"limit must be an integer from 1 to {LIST_LIMIT_MAX}, not {limit!r}")
        page = catalog.page(self._storage, offset=offset, limit=limit, q=filter, allowed=self.visible)
        return EntityList(total=page["total"], entities=[
            EntitySummary(entity=entity_id, documents=row["documents"], chunks=row["chunks"], model=row["model"])
            for entity_id, row in page["entities"].items()
        ])

    # ------------------------------------------------------------------ search
    def search(self, entity: str, query: str, k: int = DEFAULT_K, mode: str = "hybrid",
               context_words: int = 0, per_document: bool = True) -> SearchResult:
        self._entity(entity)
        if not isinstance(query, str) or not query.strip():
            raise UsageError("query must be non-empty text")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= K_MAX:
            raise UsageError(f"k must be an integer from 1 to {K_MAX}, not {k!r}")
        if mode not in MODES:
            raise UsageError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        searcher = self._searcher(entity)
        if mode != "vector":
            self._require_full_text(searcher.entity)
        if not 0 <= context_words <= CONTEXT_WORDS_MAX:
            raise UsageError(f"context_words must be between 0 and {CONTEXT_WORDS_MAX}, not {context_words}")
        if not isinstance(per_document, bool):
            raise UsageError(f"per_document must be true or false, not {per_document!r}")
        hits = searcher.search([query], k, mode, context_words=context_words, per_document=per_document)[0]
        return SearchResult(entity=entity, query=query, mode=mode, hits=[
            SearchHit(
                rank=rank, path=hit.path, doc_id=hit.doc_id,
                title=getattr(hit, "title", ""), section=getattr(hit, "section", ""),
                chunk=hit.chunk, page=getattr(hit, "page", None), ocr=bool(getattr(hit, "ocr", False)),
                score=round(float(hit.score), 6), text=hit.text, also_in=list(getattr(hit, "also_in", ())),
                chunks=list(getattr(hit, "chunks", ()) or (hit.chunk,)),
            )
            for rank, hit in enumerate(hits, 1)
        ])

    def _searcher(self, entity_id: str) -> Searcher:
        """One Searcher per entity, made on first use (it checks the entity's recorded model
        against the server's); all of them share the process's one model."""
        return self._searchers.get(entity_id)

    def _require_full_text(self, entity: EntityStore) -> None:
        """Text search builds the full-text index of an entity stored before it existed (a
        write): refuse instead, once per entity per server, with what to do about it."""
        if entity.entity_id in self._full_text_checked:
            return
        if _full_text_missing(entity.texts.path):
            raise UsageError(
                f"entity {entity.entity_id!r} has no full-text index yet (stored by an older ragctl): "
                "use mode \"vector\", or run `ragctl verify --repair` on the store once"
            )
        self._full_text_checked.add(entity.entity_id)

    # ------------------------------------------------------------------ documents
    def get_document(self, entity: str, path_or_doc_id: str) -> Document:
        store = self._entity(entity)
        if not isinstance(path_or_doc_id, str) or not path_or_doc_id:
            raise UsageError("path_or_doc_id must be a document's path or doc_id")
        records = store.records()
        record = records.get(path_or_doc_id) or next(
            (r for r in records.values() if r.get("path") == path_or_doc_id), None
        )
        if record is None:
            raise UsageError(f"entity {entity!r} has no document with path or doc_id {path_or_doc_id!r}")
        first, count = int(record["first_vector_id"]), int(record.get("chunk_count", 0))
        texts = store.texts.fetch(list(range(first, first + count)))
        return Document(
            entity=entity, doc_id=str(record["doc_id"]), path=str(record["path"]),
            name=str(record.get("name", "")), chunk_count=count,
            chunks=[DocumentChunk(chunk=i, text=texts.get(first + i, "")) for i in range(count)],
        )


def _full_text_missing(path: Path) -> bool:
    """Whether a chunk-text database has chunks but no full-text index (read-only check; the
    same test ChunkTexts.ensure_full_text makes before building one)."""
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=60)
        try:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.Error:
        return False  # the search itself reports what is wrong with the file
    return "chunks" in names and "chunks_vocab" not in names


# ---------------------------------------------------------------------- the MCP server
def build_server(tools: StoreTools, log_level: str = "WARNING") -> MCPServer[Any]:
    """An `MCPServer` with the three tools over `tools`; library errors become tool errors."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations
    from pydantic import ValidationError

    class RagctlMCPServer(MCPServer[Any]):
        async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
            """Arguments that fail the input schema (k: "many", a missing query) are reported
            in one line too, not as pydantic's multi-line report."""
            try:
                return await super().call_tool(name, arguments, context)
            except ToolError as exc:
                cause = exc.__cause__
                if isinstance(cause, ValidationError):
                    raise ToolError(f"Error executing tool {name}: {validation_line(cause)}") from cause
                raise

    level: Any = log_level.upper()
    server = RagctlMCPServer(
        "ragctl", title="ragctl document search", version=__version__, instructions=INSTRUCTIONS, log_level=level
    )
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

    def answer(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except RagctlError as exc:
            raise ToolError(" ".join(str(exc).split())) from None

    @server.tool(annotations=read_only)
    def list_entities(
        filter: Annotated[str, Field(description="Only entities whose id contains this (case-insensitive); empty: all.",
                                     json_schema_extra={"maxLength": 128})] = "",  # noqa: A002
        offset: Annotated[int, Field(description="Skip this many entities (sorted by id).",
                                     json_schema_extra={"minimum": 0})] = 0,
        limit: Annotated[int, Field(description="At most this many entities.",
                                    json_schema_extra={"minimum": 1, "maximum": LIST_LIMIT_MAX})] = LIST_LIMIT,
    ) -> EntityList:
        """List the entities (separate document collections) you can search, with their document and chunk counts; `total` says how many match."""
        return answer(tools.list_entities, filter, offset, limit)

    @server.tool(annotations=read_only)
    def search(
        entity: Annotated[str, Field(description="Entity id, from list_entities.")],
        query: Annotated[str, Field(description="What to look for, in natural language or keywords.")],
        k: Annotated[int, Field(description="How many hits to return: documents, or chunks with per_document false.",
                                json_schema_extra={"minimum": 1, "maximum": K_MAX})] = DEFAULT_K,
        mode: Annotated[str, Field(description="hybrid (both rankings fused), vector (meaning) or text (keywords, bm25).",
                                   json_schema_extra={"enum": list(MODES)})] = "hybrid",
        context_words: Annotated[int, Field(description="Per-document hits: their word budget, this many words a hit "
                                                        "(0: 150). Per-chunk hits: grow each to its chunk plus the "
                                                        "neighbouring chunks of its document, up to this many words (no "
                                                        "words repeated across hits); 0: the chunk alone.",
                                            json_schema_extra={"minimum": 0, "maximum": CONTEXT_WORDS_MAX})] = 0,
        per_document: Annotated[bool, Field(description="Each hit a document (its best chunk plus its next-best matching "
                                                        "chunks, within the budget); false: each hit one chunk.")] = True,
    ) -> SearchResult:
        """Search one entity's documents: the top-k documents for a query, each with its path, section, score and the text of its best matching chunks."""
        return answer(tools.search, entity, query, k, mode, context_words, per_document)

    @server.tool(annotations=read_only)
    def get_document(
        entity: Annotated[str, Field(description="Entity id, from list_entities.")],
        path_or_doc_id: Annotated[str, Field(description="A document's path or doc_id, as search hits give them.")],
    ) -> Document:
        """Read one whole document of an entity: all its chunks, in order."""
        return answer(tools.get_document, entity, path_or_doc_id)

    return server


def validation_line(error: Any) -> str:
    """A pydantic ValidationError as one line: `invalid arguments: k: Input should be ...`."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ())) or "arguments"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "invalid arguments: " + "; ".join(parts)


def serve_stdio(tools: StoreTools, log_level: str = "WARNING") -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    build_server(tools, log_level).run("stdio")
