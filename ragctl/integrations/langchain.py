"""`RagctlVectorStore`: a LangChain `VectorStore` over one entity of a ragctl store.

How a LangChain document becomes a ragctl document (docs/langchain.md has the whole story):

* one document per LangChain id: `doc_id` = the id, `path` = `langchain/<id>`, `parser` =
  "langchain", the metadata in the record's `metadata` field (JSON, kept exactly), and
  `content_hash` = sha256 of the canonical JSON of [id, text, metadata] (so re-adding the same
  document is a no-op, and two ids with the same text are two documents);
* its text is one chunk, or - with ragctl's own model, when the text is longer than the
  model's window - consecutive slices cut at word boundaries in the model's own tokens; the
  slices concatenate to the exact text, which is what `get_by_ids` and every search return;
* every write is one `EntityStore.commit` (the entity's lock, the crash-safe commit protocol
  of `ragctl ingest`), so `ragctl verify`, `stats` and `query` read these documents like any.

Searches read the whole entity: documents an `ingest` put there come back too, one
`Document` per chunk (`metadata`: source path, doc_id, chunk). Writes touch only the
documents this class wrote; an id that belongs to an ingested file is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever

from ragctl.errors import ConfigError, UsageError
from ragctl.model_config import ModelConfig
from ragctl.passages import chunk_signatures
from ragctl.storage.entity import EntityStore, PreparedDoc
from ragctl.storage.json_storage import Record, open_store

if TYPE_CHECKING:
    import numpy as np

    from ragctl.model_config import Embedder
    from ragctl.model_spec import ModelSpec

PATH_PREFIX = "langchain/"
PARSER = "langchain"
MODEL_PREFIX = "langchain:"
MODES = ("vector", "text", "hybrid")
COMMIT_BATCH = 256  # texts embedded and committed together (each batch is one atomic commit)
WINDOW_MARGIN = 8  # tokens kept free in each slice: a slice re-tokenised may differ slightly
# settings of an Embeddings object never put into its digest (they name no model)
_SECRET_WORDS = ("key", "token", "secret", "password", "credential", "auth", "header")


class RagctlEmbeddings(Embeddings):
    """ragctl's model (`load_embedder(config)`) as LangChain `Embeddings`: L2-normalised rows."""

    def __init__(self, config: ModelConfig | None = None, *, spec: ModelSpec | None = None) -> None:
        self.config = config if config is not None else ModelConfig()
        self.spec = spec

    @property
    def embedder(self) -> Embedder:
        from ragctl.embedding import load_embedder

        return load_embedder(self.config, spec=self.spec)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.embedder.encode(list(texts))]

    def embed_query(self, text: str) -> list[float]:
        return [float(x) for x in self.embedder.encode([text])[0]]


class _LangChainModel:
    """A LangChain `Embeddings` bound to an entity. Its identity: name `langchain:<Class>`,
    digest over its class path and public settings, dimension of the vectors it returns."""

    precision = ""

    def __init__(self, embedding: Embeddings, dim: int | None) -> None:
        self.embedding = embedding
        cls = type(embedding)
        self.name = f"{MODEL_PREFIX}{cls.__name__}"
        described = {"class": f"{cls.__module__}.{cls.__qualname__}", "settings": public_settings(embedding)}
        self.digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
        self.dim = dim  # the entity's recorded dimension, else that of the first vectors

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "dim": self.dim}

    def embedded_by(self) -> dict[str, Any]:
        return {"backend": "langchain", "precision": None, "device": None, "runtime": self.name}

    def pieces(self, text: str) -> list[str]:
        return [text]  # LangChain embeddings handle their own input limits

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return self._checked(self.embedding.embed_documents(texts), len(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self._checked([self.embedding.embed_query(text)], 1)

    def _checked(self, rows: Any, n: int) -> np.ndarray:
        import numpy as np

        vectors = np.asarray(rows, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != n or vectors.shape[1] == 0:
            raise ConfigError(f"{self.name}: expected {n} vector(s), got an array of shape {vectors.shape}")
        if self.dim is None:
            self.dim = int(vectors.shape[1])
        elif vectors.shape[1] != self.dim:
            raise ConfigError(
                f"{self.name} returned vectors of dimension {vectors.shape[1]}; the entity holds dimension {self.dim}"
            )
        return normalised(vectors)

    def as_embeddings(self) -> Embeddings:
        return self.embedding


class _RagctlModel:
    """ragctl's own model (the entity's recorded one, or the packaged default)."""

    def __init__(self, spec: ModelSpec, config: ModelConfig) -> None:
        self.spec = spec
        self.config = config
        self.name, self.dim = spec.name, spec.dim
        self._tokenizer: Any = None

    @property
    def embedder(self) -> Embedder:
        from ragctl.embedding import load_embedder

        return load_embedder(self.config, spec=self.spec)

    @property
    def precision(self) -> str:
        return str(self.embedder.precision)

    def embedded_by(self) -> dict[str, Any]:
        from ragctl.model_config import embedded_by

        return embedded_by(self.embedder.describe())

    def identity(self) -> dict[str, Any]:
        return self.spec.identity()

    def pieces(self, text: str) -> list[str]:
        if self._tokenizer is None:
            from ragctl.chunking import load_tokenizer

            self._tokenizer = load_tokenizer(self.spec.path)
        budget = max(16, self.spec.max_tokens - 2 - WINDOW_MARGIN)  # 2: [CLS] and [SEP]
        return window_pieces(text, self._tokenizer.encode(text, add_special_tokens=False).offsets, budget)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return normalised(self.embedder.encode(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return normalised(self.embedder.encode([text]))

    def as_embeddings(self) -> Embeddings:
        return RagctlEmbeddings(self.config, spec=self.spec)


_Model = _LangChainModel | _RagctlModel


class RagctlVectorStore(VectorStore):
    """A LangChain vector store over the entity `entity` of the ragctl store `store_dir`
    (created on first use).

    `embedding=None`: ragctl's model - the one the entity records, else the packaged default
    (`config` picks backend, precision, device or a remote service, as `ragctl ingest`'s model
    options). A LangChain `Embeddings` object: its identity is recorded in the entity like any
    model's, and an entity recorded with another model is refused (ConfigError).

    Searches take `mode` = "vector" (cosine; `similarity_search`'s default), "text" (bm25 over
    the full-text index) or "hybrid" (reciprocal rank fusion; `as_retriever`'s default),
    `per_document` (default: the store's, True) and `context_words` (default: the store's, 0), as
    `ragctl query` takes them: per-document results are the documents of the best 2k passages,
    at most k, an ingested file's best chunk plus its next-best matching chunks within a budget
    of k x `context_words` words (0: 150 a result; metadata `chunks` lists them);
    `per_document=False`: k chunks, each grown to its neighbouring chunks up to `context_words`
    words, no words repeated across results. A document written through this class is
    returned whole.
    """

    def __init__(
        self,
        store_dir: str | Path,
        entity: str,
        embedding: Embeddings | None = None,
        *,
        config: ModelConfig | None = None,
        context_words: int = 0,
        per_document: bool = True,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.context_words = _checked_context_words(context_words)  # searches' default
        self.per_document = _checked_per_document(per_document)  # searches' default
        self.entity = EntityStore(open_store(self.store_dir, create=True), entity)
        self._model: _Model = _bind_model(self.entity, embedding, config)
        self.reused = 0  # pieces of the last add_texts batch that took a stored vector (passages)

    @property
    def entity_id(self) -> str:
        return self.entity.entity_id

    @property
    def embeddings(self) -> Embeddings | None:
        return self._model.as_embeddings()

    # ------------------------------------------------------------------ writes
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add (or replace, by id) texts; returns their ids (generated where none is given).
        Each batch of 256 texts is one atomic commit; an unchanged document is not re-embedded."""
        _refuse_options("add_texts", kwargs)
        text_list = list(texts)
        if metadatas is not None and len(metadatas) != len(text_list):
            raise UsageError(f"add_texts: {len(metadatas)} metadatas for {len(text_list)} texts")
        if ids is not None and len(ids) != len(text_list):
            raise UsageError(f"add_texts: {len(ids)} ids for {len(text_list)} texts")
        given: list[str | None] = list(ids) if ids is not None else [None] * len(text_list)
        doc_ids = [_checked_id(i) if i else str(uuid.uuid4()) for i in given]
        metas: list[dict[str, Any] | None] = list(metadatas) if metadatas is not None else [None] * len(text_list)
        latest: dict[str, tuple[str, dict[str, Any]]] = {}  # the same id twice: the last one wins
        for doc_id, text, metadata in zip(doc_ids, text_list, metas):
            if not isinstance(text, str):
                raise UsageError(f"document {doc_id!r}: the text must be a str, not {type(text).__name__}")
            latest.pop(doc_id, None)
            latest[doc_id] = (text, _checked_metadata(doc_id, metadata))
        items = list(latest.items())
        for start in range(0, len(items), COMMIT_BATCH):
            self._commit_batch(items[start : start + COMMIT_BATCH])
        return doc_ids

    def _commit_batch(self, items: list[tuple[str, tuple[str, dict[str, Any]]]]) -> None:
        records = self.entity.records()
        todo: list[tuple[str, str, dict[str, Any], str]] = []
        for doc_id, (text, metadata) in items:
            record = records.get(doc_id)
            if record is not None and not is_langchain_record(record):
                raise self._not_ours(doc_id, record)
            content_hash = document_hash(doc_id, text, metadata)
            if record is None or record.get("content_hash") != content_hash:
                todo.append((doc_id, text, metadata, content_hash))
        if not todo:
            return
        pieces = [self._model.pieces(text) for _, text, _, _ in todo]
        vectors = self._vectors([piece for doc in pieces for piece in doc])
        now = time.time_ns()
        docs, row = [], 0
        for (doc_id, text, metadata, content_hash), doc_pieces in zip(todo, pieces):
            keys, near = chunk_signatures(doc_pieces)  # before the commit: not under the entity's lock
            docs.append(PreparedDoc(
                path=PATH_PREFIX + doc_id, content_hash=content_hash, size=len(text.encode("utf-8")),
                mtime_ns=now, chunks=doc_pieces, vectors=vectors[row : row + len(doc_pieces)], parser=PARSER,
                doc_id=doc_id, extra={"metadata": metadata}, keys=keys, near=near,
            ))
            row += len(doc_pieces)
        self.entity.commit(self._model.identity(), adds=docs, precision=self._model.precision,
                           embedded_by=self._model.embedded_by())

    def _vectors(self, pieces: list[str]) -> np.ndarray:
        """One vector per piece; a passage (`chunk_texts.passage_key`) already held by a live
        document this class wrote, or repeated in this batch, takes that vector instead of an
        embedding call (ingested files' chunks carry a context line, so they are not used)."""
        import numpy as np

        from ragctl.storage.chunk_texts import passage_key

        if not pieces:
            return self._model.embed_documents([])
        keys = [passage_key(p) for p in pieces]
        found: dict[bytes, Any] = {}
        if self.entity.texts.exists():
            owners = self.entity.owners()
            chosen: dict[bytes, int] = {}
            for key, rows in self.entity.holders(list(dict.fromkeys(keys))).items():
                for vid, _doc_id, _ord in rows:
                    record = owners.owner(vid)
                    if record is not None and is_langchain_record(record):
                        chosen[key] = vid
                        break
            stored = self.entity.index.vectors_of(chosen.values()) if chosen else {}
            found = {key: stored[vid] for key, vid in chosen.items() if vid in stored}
        first: dict[bytes, int] = {}
        texts: list[str] = []
        for piece, key in zip(pieces, keys):
            if key not in found and key not in first:
                first[key] = len(texts)
                texts.append(piece)
        self.reused = len(pieces) - len(texts)  # the last batch's pieces that took a stored vector
        encoded = self._model.embed_documents(texts) if texts else None
        rows = [found[key] if key in found else encoded[first[key]] for key in keys]  # type: ignore[index]
        return np.vstack(rows).astype(np.float32)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (ids not in the entity are ignored); `ids=None` deletes every
        document this class wrote to the entity (ingested files stay). One atomic commit."""
        _refuse_options("delete", kwargs)
        records = self.entity.records()
        if ids is None:
            removes = [key for key, record in records.items() if is_langchain_record(record)]
        else:
            removes = []
            for doc_id in dict.fromkeys(ids):
                record = records.get(doc_id)
                if record is None:
                    continue
                if not is_langchain_record(record):
                    raise self._not_ours(doc_id, record)
                removes.append(doc_id)
        if removes:
            recorded = (self.entity.meta() or {}).get("model") or self._model.identity()
            self.entity.commit(recorded, removes=removes)
        return True

    def _not_ours(self, doc_id: str, record: Record) -> UsageError:
        return UsageError(
            f"id {doc_id!r} is the file {record.get('path')!r} that ragctl ingest indexed in entity "
            f"{self.entity_id!r}; LangChain may not replace or delete it (use another id, or ragctl ingest --prune)"
        )

    # ------------------------------------------------------------------ reads
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents this class wrote with these ids (missing ids are left out)."""
        records = self.entity.records()
        wanted = [records[i] for i in dict.fromkeys(ids) if i in records and is_langchain_record(records[i])]
        texts = self.entity.texts.fetch([vid for record in wanted for vid in _vector_ids(record)])
        docs = [_langchain_document(record, texts) for record in wanted]
        return [doc for doc in docs if doc is not None]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """Top-k documents and their scores: cosine (vector), bm25 (text) or the RRF score
        (hybrid); `mode` defaults to "vector"; `context_words` and `per_document` to the store's."""
        mode = kwargs.pop("mode", "vector")
        context_words = _checked_context_words(kwargs.pop("context_words", self.context_words))
        per_document = _checked_per_document(kwargs.pop("per_document", self.per_document))
        _refuse_options("similarity_search", kwargs)
        if mode not in MODES:
            raise UsageError(f"unknown search mode {mode!r} (one of {', '.join(MODES)})")
        vector = self._model.embed_query(query) if mode != "text" else None
        return self._search(query, vector, k, mode, context_words, per_document)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        import numpy as np

        if kwargs.pop("mode", "vector") != "vector":
            raise UsageError("a search by vector has only the mode 'vector'")
        context_words = _checked_context_words(kwargs.pop("context_words", self.context_words))
        per_document = _checked_per_document(kwargs.pop("per_document", self.per_document))
        _refuse_options("similarity_search_by_vector", kwargs)
        vector = np.asarray([embedding], dtype=np.float32)
        dim = self._model.dim
        if vector.ndim != 2 or (dim is not None and vector.shape[1] != dim):
            raise UsageError(f"the query vector has {vector.shape[-1]} dimensions; the entity's model has {dim}")
        return self._search(None, normalised(vector), k, "vector", context_words, per_document)

    def _select_relevance_score_fn(self) -> Any:
        return lambda cosine: max(0.0, min(1.0, (1.0 + cosine) / 2.0))

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        if kwargs.pop("mode", "vector") != "vector":
            raise UsageError("relevance scores exist for mode 'vector' only (text and hybrid scores are ranks)")
        return super()._similarity_search_with_relevance_scores(query, k, mode="vector", **kwargs)

    def as_retriever(self, **kwargs: Any) -> VectorStoreRetriever:
        """A retriever; searches are hybrid unless `search_kwargs` names another `mode`."""
        if kwargs.get("search_type", "similarity") == "similarity":
            kwargs["search_kwargs"] = {"mode": "hybrid", **(kwargs.get("search_kwargs") or {})}
        return super().as_retriever(**kwargs)

    def _search(
        self, query: str | None, vector: np.ndarray | None, k: int, mode: str, context_words: int = 0,
        per_document: bool = True,
    ) -> list[tuple[Document, float]]:
        if not isinstance(k, int) or k < 1:
            raise UsageError(f"k must be a positive integer, not {k!r}")
        from ragctl.query import DOCUMENT_WORDS_PER_HIT, MIN_DEPTH, PER_DOCUMENT_READ

        want = PER_DOCUMENT_READ * k if per_document else k  # per document: cut from 2k passages
        depth = max(MIN_DEPTH, 2 * want) if mode == "hybrid" else want
        while True:
            ranked = self._ranked(query, vector, depth, mode)
            picked = self._pick(ranked, want)
            # a passage held by several chunks counts once: look deeper until enough or the end
            if len(picked) >= want or len(ranked) < depth:
                break
            depth *= 4
        if per_document:
            return self._per_document(self._materialised(picked), k, k * (context_words or DOCUMENT_WORDS_PER_HIT))
        return self._materialise(picked, context_words)

    @staticmethod
    def _per_document(found: list[tuple[Record, int, Document, float]], k: int,
                      budget: int) -> list[tuple[Document, float]]:
        """At most k documents from the 2k ranked results, as `ragctl query` makes them
        (`ragctl.query.per_document_hits`): an ingested file's best result carries its
        next-best matching chunks too, within `budget` words over all k (metadata `chunks`);
        a document written through this class is one result already, whole."""
        from ragctl.query import Hit, per_document_hits

        by_key: dict[tuple[str, int], tuple[Document, float]] = {}
        hits = []
        for record, vid, doc, score in found:
            chunk = 0 if is_langchain_record(record) else vid - int(record["first_vector_id"])
            key = (str(record["doc_id"]), chunk)
            by_key[key] = (doc, score)
            hits.append(Hit(doc_id=key[0], path=str(record["path"]), score=score, text=doc.page_content, chunk=chunk,
                            also_in=tuple(doc.metadata.get("also_in", ())) if not is_langchain_record(record) else ()))
        out = []
        for hit in per_document_hits(hits, k, budget):
            doc, score = by_key[(hit.doc_id, hit.chunk)]
            if hit.chunks:  # more than one chunk of an ingested file
                doc = doc.model_copy(update={"page_content": hit.text, "metadata": {
                    **doc.metadata, "chunks": list(hit.chunks),
                    **({"also_in": list(hit.also_in)} if hit.also_in else {})}})
            out.append((doc, score))
        return out

    def _ranked(self, query: str | None, vector: np.ndarray | None, depth: int, mode: str) -> list[tuple[int, float]]:
        from ragctl.query import RRF_K, TEXT_WEIGHT, VECTOR_WEIGHT, fuse

        if mode == "text":
            return self.entity.text_search(query or "", depth)
        assert vector is not None
        by_vector = self.entity.vector_search(vector, depth)[0]
        if mode == "vector":
            return by_vector
        fused = fuse(by_vector, self.entity.text_search(query or "", depth), depth, RRF_K, VECTOR_WEIGHT, TEXT_WEIGHT)
        return [(vid, score) for vid, score, _, _ in fused]

    def _pick(self, ranked: list[tuple[int, float]], k: int) -> list[tuple[Record, int, float, tuple[str, ...]]]:
        """(record, vector id, score, also_in) best first: one per LangChain document, one per
        passage of the ingested files: their chunks holding the same passage (or a
        near-duplicate, `ragctl.passages`) are one result, attributed to the most specific of
        them (metadata `also_in`: the other holders' paths), as `ragctl query` does. Documents
        written through this class are never merged: each is an object its caller added, with
        metadata of its own."""
        from ragctl.passages import PassageGroups, most_specific

        owners = self.entity.owners()
        live = [(vid, score, record) for vid, score in ranked if (record := owners.owner(vid)) is not None]
        files = [vid for vid, _, record in live if not is_langchain_record(record)]
        rows = self.entity.texts.fetch_rows(files)
        groups = PassageGroups()
        for vid in files:
            groups.add(vid, rows.get(vid, ("",))[0])
        seen: set[Any] = set()
        picked: list[tuple[Record, int, float, tuple[str, ...]]] = []
        for vid, score, record in live:
            if is_langchain_record(record):
                if record["doc_id"] not in seen:
                    seen.add(record["doc_id"])
                    picked.append((record, vid, score, ()))
            elif ("passage", groups.group[vid]) not in seen:
                g = groups.group[vid]
                seen.add(("passage", g))
                holders = [(m, r) for m in groups.members[g] if (r := owners.owner(m)) is not None]
                first_key = groups.keys[groups.members[g][0]]  # the text that ranked best is kept
                best, chosen = most_specific([(m, r) for m, r in holders if groups.keys[m] == first_key])
                others = tuple(sorted({str(r["path"]) for _, r in holders if r["doc_id"] != chosen["doc_id"]}))
                picked.append((chosen, best, score, others))
            if len(picked) == k:
                break
        return picked

    def _materialise(
        self, picked: list[tuple[Record, int, float, tuple[str, ...]]], context_words: int = 0,
    ) -> list[tuple[Document, float]]:
        return [(doc, score) for _, _, doc, score in self._materialised(picked, context_words)]

    def _materialised(
        self, picked: list[tuple[Record, int, float, tuple[str, ...]]], context_words: int = 0,
    ) -> list[tuple[Record, int, Document, float]]:
        """(record, vector id, LangChain document, score) of each pick still there."""
        wanted = [v for record, vid, _, _ in picked
                  for v in (_vector_ids(record) if is_langchain_record(record) else [vid])]
        rows = self.entity.texts.fetch_rows(wanted)
        texts = {vid: row[0] for vid, row in rows.items()}
        if context_words:
            texts.update(self._grown(picked, texts, context_words))
        out = []
        for record, vid, score, also_in in picked:
            if is_langchain_record(record):
                doc = _langchain_document(record, texts)
            elif vid in texts:
                chunk = vid - int(record["first_vector_id"])
                metadata: dict[str, Any] = {"source": record["path"], "doc_id": record["doc_id"], "chunk": chunk}
                _, _, _, page, ocr = rows[vid]
                if page is not None:  # the page it starts on (PDF pages, image frames)
                    metadata["page"] = page
                if ocr:  # recognised from a page image
                    metadata["ocr"] = True
                doc = Document(id=record["doc_id"], page_content=texts[vid], metadata=metadata)
            else:
                doc = None
            if doc is not None:  # None: deleted (and collected) since the search
                if also_in:  # the other documents holding this passage (collapsed into this one)
                    doc.metadata["also_in"] = list(also_in)
                out.append((record, vid, doc, float(score)))
        return out

    def _grown(self, picked: list[tuple[Record, int, float, tuple[str, ...]]], texts: dict[int, str],
               budget: int) -> dict[int, str]:
        """The texts of the ingested files' chunks among `picked` (vector id -> text), each grown
        to its neighbouring chunks up to `budget` words, best hit first, no words repeated across
        hits (`ragctl.query.with_context`, as `ragctl query --context-words`)."""
        from ragctl.query import Hit, with_context

        hits = [Hit(doc_id=str(record["doc_id"]), path=str(record["path"]), score=float(score), text=texts[vid],
                    chunk=vid - int(record["first_vector_id"]))
                for record, vid, score, _ in picked if not is_langchain_record(record) and vid in texts]
        grown = with_context(self.entity, hits, budget)
        by_doc = {str(record["doc_id"]): int(record["first_vector_id"]) for record, _, _, _ in picked}
        return {by_doc[hit.doc_id] + hit.chunk: hit.text for hit in grown}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        store_dir: str | Path | None = None,
        entity: str | None = None,
        config: ModelConfig | None = None,
        context_words: int = 0,
        per_document: bool = True,
        **kwargs: Any,
    ) -> Self:
        """A store over `store_dir`/`entity` (both required keywords) holding `texts`."""
        if store_dir is None or entity is None:
            raise UsageError("RagctlVectorStore.from_texts needs store_dir= and entity=")
        _refuse_options("from_texts", kwargs)
        store = cls(store_dir, entity, embedding, config=config, context_words=context_words, per_document=per_document)
        store.add_texts(texts, metadatas, ids=ids)
        return store


# ---------------------------------------------------------------------- helpers
def _bind_model(entity: EntityStore, embedding: Embeddings | None, config: ModelConfig | None) -> _Model:
    """The model the store writes and queries with, checked against what the entity records."""
    recorded = (entity.meta() or {}).get("model") or {}
    recorded_name = str(recorded.get("name", ""))
    if embedding is not None and not isinstance(embedding, RagctlEmbeddings):
        model = _LangChainModel(embedding, recorded.get("dim"))
        if recorded and (recorded_name != model.name or recorded.get("digest") != model.digest):
            raise ConfigError(
                f"entity {entity.entity_id!r} was indexed with model {recorded_name!r} (digest "
                f"{str(recorded.get('digest'))[:12]}); the embedding given is {model.name!r} (digest "
                f"{model.digest[:12]}), a different model: use the same embedding, or another entity"
            )
        return model
    if isinstance(embedding, RagctlEmbeddings):
        config = embedding.config
    if recorded_name.startswith(MODEL_PREFIX):
        raise ConfigError(
            f"entity {entity.entity_id!r} was indexed through LangChain embeddings {recorded_name!r}; "
            "pass the same embedding object as embedding="
        )
    from ragctl.query import model_for_entity

    config = config if config is not None else ModelConfig()
    return _RagctlModel(model_for_entity(entity, config), config)


def is_langchain_record(record: Record) -> bool:
    """Whether a mapping record is a document this module wrote (not an ingested file)."""
    return record.get("parser") == PARSER and str(record.get("path", "")).startswith(PATH_PREFIX)


def document_hash(doc_id: str, text: str, metadata: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of [id, text, metadata]: the record's content_hash."""
    canonical = json.dumps([doc_id, text, metadata], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def public_settings(embedding: Embeddings) -> dict[str, Any]:
    """An Embeddings object's public, JSON-able settings, secrets left out (its digest's input)."""
    dump = getattr(embedding, "model_dump", None)
    try:
        raw = dump() if callable(dump) else dict(vars(embedding))
    except Exception:  # noqa: BLE001 - an object we cannot describe: its class alone names it
        raw = {}
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key.startswith("_") or any(w in key.lower() for w in _SECRET_WORDS):
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        settings[key] = value
    return settings


def window_pieces(text: str, offsets: Sequence[tuple[int, int]], budget: int) -> list[str]:
    """`text` cut into consecutive slices of at most `budget` tokens (token i spans
    offsets[i]), each cut at the start of a word when one lies in the window's second half.
    The slices concatenate to `text` exactly."""
    if len(offsets) <= budget:
        return [text]
    cuts: list[int] = []
    first, last_cut = 0, 0
    while len(offsets) - first > budget:
        end = first + budget  # the first token of the next slice, at the latest
        cut_at = end
        for j in range(end, first + budget // 2, -1):
            start = offsets[j][0]
            if start > 0 and text[start - 1].isspace():
                cut_at = j
                break
        position = offsets[cut_at][0]
        if position > last_cut:
            cuts.append(position)
            last_cut = position
        first = cut_at
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def normalised(vectors: np.ndarray) -> np.ndarray:
    import numpy as np

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def _vector_ids(record: Record) -> list[int]:
    first = int(record["first_vector_id"])
    return list(range(first, first + int(record["chunk_count"])))


def _langchain_document(record: Record, texts: dict[int, str]) -> Document | None:
    """The document as added: its slices joined, its metadata (None if a slice is gone)."""
    ids = _vector_ids(record)
    if any(vid not in texts for vid in ids):
        return None
    metadata = json.loads(json.dumps(record.get("metadata") or {}))  # a copy the caller may change
    return Document(id=record["doc_id"], page_content="".join(texts[vid] for vid in ids), metadata=metadata)


def _checked_id(doc_id: object) -> str:
    if not isinstance(doc_id, str) or "\0" in doc_id:
        raise UsageError(f"invalid document id {doc_id!r}: ids are non-empty strings without NUL")
    return doc_id


def _checked_metadata(doc_id: str, metadata: object) -> dict[str, Any]:
    """A JSON copy of the metadata; refused (one line) unless it survives JSON exactly."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise UsageError(f"metadata of document {doc_id!r} must be a dict, not {type(metadata).__name__}")
    try:
        encoded = json.dumps(metadata, sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"metadata of document {doc_id!r} cannot be stored as JSON: {exc}") from exc
    copy: dict[str, Any] = json.loads(encoded)
    if copy != metadata:
        raise UsageError(
            f"metadata of document {doc_id!r} would not come back as given (JSON keeps str keys, "
            "lists, not tuples): store str keys and lists"
        )
    return copy


def _checked_context_words(value: object) -> int:
    from ragctl.query import CONTEXT_WORDS_MAX

    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= CONTEXT_WORDS_MAX:
        raise UsageError(f"context_words must be an integer between 0 and {CONTEXT_WORDS_MAX}, not {value!r}")
    return value


def _checked_per_document(value: object) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"per_document must be True or False, not {value!r}")
    return value


def _refuse_options(method: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise UsageError(f"RagctlVectorStore.{method}: unsupported option(s) {', '.join(sorted(kwargs))}")
