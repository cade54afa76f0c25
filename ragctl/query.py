"""Reading an entity back: top-k chunks for one or many queries, with one model load.

Modes: `vector` (cosine over the FAISS index), `text` (bm25 over the SQLite FTS5 index of the
chunk texts) and `hybrid` (the default: reciprocal rank fusion of the two lists). Every mode
only returns chunks of documents the entity's mapping references.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ragctl.errors import ConfigError, UsageError
from ragctl.model_config import ModelConfig, embedded_by
from ragctl.model_spec import ModelSpec, resolve_model
from ragctl.rerank import RERANK_DEPTH, Candidate, PassageReranker
from ragctl.storage.entity import EntityStore, open_entity
from ragctl.storage.search import RRF_K, EntitySearch, Hit, Ranked, fuse

__all__ = ["CONTEXT_WORDS_MAX", "DOCUMENT_WORDS_PER_HIT", "MODES", "RRF_K", "Hit", "Searcher", "fuse", "hit_json",
           "model_for_entity", "per_document_hits", "with_context"]

if TYPE_CHECKING:
    from ragctl.model_config import Embedder
    from ragctl.passages import PassageGroups
    from ragctl.storage.chunk_texts import RowData

MODES = ("hybrid", "vector", "text")
MIN_DEPTH = 20  # candidates taken from each list before fusing (at least 2k)
# collapsing reads each list this many times deeper, so that MIN_DEPTH distinct passages remain
# when copies (a print page, a README in three folders) take half the rows; a query whose deeper
# read is still short of distinct passages (more copies) reads again, COLLAPSE_READ_MORE deeper
COLLAPSE_READ = 2
COLLAPSE_READ_MORE = 4
# A searcher whose last SHALLOW_AFTER queries met no copy among their candidates reads each list
# only as deep as a search without collapsing does; the hits are the same (a query that then
# meets copies reads again, as deep as the deeper read would have gone), and an entity without
# copies saves the deeper read (~0.3 ms a hybrid query at 100k chunks). Its first query reads deep.
SHALLOW_AFTER = 16
CONTEXT_WORDS_MAX = 5000  # a hit grown to its neighbours (context_words): at most this many words
# A per-document hit (the default) may grow to this many words on average, with its document's
# next-best matching chunks: issue 26's reader budget, 750 words for a top 5 (not tuned on any
# question set); `context_words` > 0 sets it instead
DOCUMENT_WORDS_PER_HIT = 150
# per-document hits are cut from this many times k chunk hits: at most k documents, fewer when
# fewer documents hold those chunks (a document that holds most of them carries more of its text:
# the other documents rank below them; docs/retrieval.md, "Per-document hits")
PER_DOCUMENT_READ = 2
ALSO_IN_MAX = 50  # paths listed in a hit's also_in (a boilerplate passage may be in thousands of files)
# weights of the two lists in the fusion (docs/retrieval.md: tuned on question sets)
VECTOR_WEIGHT = 1.0
TEXT_WEIGHT = 1.0


def model_for_entity(entity: EntityStore, config: ModelConfig) -> ModelSpec:
    """The model the entity was indexed with (or `config.model`, which must be the same one);
    with `config.remote`, the embedding service's identity (host, model, dim) must be the
    recorded one."""
    model, remote = config.model, config.remote
    meta = entity.meta() or {}
    recorded = meta.get("model", {})
    if remote is not None:
        from ragctl.runtimes.remote import remote_spec

        spec: ModelSpec = remote_spec(model, remote)
    elif str(recorded.get("name", "")).startswith("remote:"):
        raise ConfigError(
            f"entity {entity.entity_id!r} was indexed through an embedding service ({recorded['name']}); "
            "pass the same --embed-url/--embed-model to query it"
        )
    elif str(recorded.get("name", "")).startswith("langchain:") and model is None:
        raise ConfigError(
            f"entity {entity.entity_id!r} was indexed through LangChain embeddings ({recorded['name']}); "
            "ragctl cannot embed queries for it: search it with ragctl.integrations.langchain.RagctlVectorStore"
        )
    else:
        spec = resolve_model(model if model is not None else recorded.get("name"))
    if recorded and (recorded.get("digest") != spec.digest or recorded.get("dim") != spec.dim):
        raise ConfigError(
            f"entity {entity.entity_id!r} was indexed with model {recorded.get('name')!r}; "
            f"{spec.name!r} is a different model (digest or dimension differs)"
        )
    return spec


class Searcher:
    """Loads the model once (only if a mode needs it) and answers many queries of one entity."""

    def __init__(self, store: Path, entity_id: str, config: ModelConfig | None = None) -> None:
        self.entity = open_entity(store, entity_id)
        self.config = config if config is not None else ModelConfig()
        self.spec = model_for_entity(self.entity, self.config)
        self._embedder: Embedder | None = None
        self._rerank: PassageReranker | None = None
        self._rerank_generation: Any = None
        self._clean_run = 0  # queries in a row whose candidates held no copy (SHALLOW_AFTER)

    @property
    def embedder(self) -> Embedder:
        """The process's shared model for this config (loaded on the first vector query)."""
        if self._embedder is None:
            from ragctl.embedding import load_embedder

            self._embedder = load_embedder(self.config, spec=self.spec)
        return self._embedder

    def _encode(self, queries: list[str]):  # -> np.ndarray
        return self.embedder.encode(queries)

    def model_info(self) -> dict[str, Any] | None:
        """The runtime that embedded this searcher's queries (None: no query needed the model)."""
        return None if self._embedder is None else embedded_by(self._embedder.describe())

    def search(self, queries: list[str], k: int = 5, mode: str = "hybrid", rerank: bool = False,
               collapse: bool = True, context_words: int = 0, per_document: bool = True) -> list[list[Hit]]:
        """Top-k hits per query. `per_document` (the default): the documents of the top 2k
        chunks, at most k, each hit the best chunk of one document plus, up to a word budget
        shared by the hits, the document's next-best matching chunks among those 2k (see
        `per_document_hits`; the budget is k x `context_words`, or k x DOCUMENT_WORDS_PER_HIT
        when that is 0); `per_document=False`: k chunks, a document's chunks each a hit of its
        own. `rerank`: the top RERANK_DEPTH candidates of the mode are re-scored passage by
        passage (ragctl.rerank) and the best kept. `collapse` (the default): a passage held by
        several documents, or near-duplicated, is one hit, attributed to its most specific
        holder, the others listed in `also_in`; no top k holds the same passage twice
        (`collapse=False`: every chunk as stored, for comparisons).
        Chunk hits with `context_words` > 0: each hit's text is its chunk plus the neighbouring
        chunks of its document up to that many words (see `with_context`)."""
        if per_document:
            if k < 1:
                raise UsageError("k must be at least 1")
            budget = k * (context_words or DOCUMENT_WORDS_PER_HIT)
            results = self.search(queries, PER_DOCUMENT_READ * k, mode, rerank, collapse, per_document=False)
            return [per_document_hits(hits, k, budget) for hits in results]
        if context_words:
            results = self.search(queries, k, mode, rerank, collapse, per_document=False)
            return [self.with_context(hits, context_words) for hits in results]
        if k < 1:
            raise UsageError("k must be at least 1")
        if mode not in MODES:
            raise UsageError(f"unknown search mode {mode!r} (one of {', '.join(MODES)})")
        if not queries:
            return []
        with self.entity.reading():
            return self._search(queries, k, mode, rerank, collapse)

    def _search(self, queries: list[str], k: int, mode: str, rerank: bool, collapse: bool) -> list[list[Hit]]:
        searching = EntitySearch(self.entity)
        want = max(k, RERANK_DEPTH) if rerank else k
        vectors = self._encode(queries) if mode != "text" or rerank else None
        depth = max(MIN_DEPTH, 2 * want) if mode == "hybrid" else want
        # with collapsing, each list is read deeper so that `depth` distinct passages remain
        # (unless the recent queries met no copies at all: SHALLOW_AFTER)
        shallow = self._clean_run >= SHALLOW_AFTER
        read = depth * COLLAPSE_READ if collapse and not shallow else depth
        vlists: list[list[tuple[int, float]]] = [[] for _ in queries]
        tlists: list[list[tuple[int, float]]] = [[] for _ in queries]
        if mode != "text":
            assert vectors is not None
            vlists = searching.vector_search(vectors, read)
        if mode != "vector":
            tlists = [searching.text_search(q, read) for q in queries]
        ranked: list[list[Ranked]] = []
        also: list[dict[int, tuple[str, ...]]] = []
        # what collapsing read: candidates' (passage key, near signature), and the chunk rows it
        # needed (reused for the hits)
        reads = _Reads()
        for n, (vrows, trows) in enumerate(zip(vlists, tlists)):
            rows: list[Ranked]
            collapsed = None
            if collapse:
                collapsed = self._collapsed(vrows, trows, depth, reads)
                if (len(collapsed.vkept) < depth and len(vrows) == read) or (len(collapsed.tkept) < depth and len(trows) == read):
                    # copies filled the read: read this query's lists once more, deeper (as
                    # deep whether the first read was shallow or not: the same hits)
                    deeper = depth * COLLAPSE_READ * COLLAPSE_READ_MORE
                    if mode != "text":
                        assert vectors is not None
                        vrows = searching.vector_search(vectors[n : n + 1], deeper)[0]
                    if mode != "vector":
                        trows = searching.text_search(queries[n], deeper)
                    collapsed = self._collapsed(vrows, trows, depth, reads)
                copies = len(collapsed.groups.group) > len(collapsed.groups.members)
                self._clean_run = 0 if copies else self._clean_run + 1
                vrows, trows = collapsed.vkept, collapsed.tkept
            if mode == "vector":
                rows = [(i, s, rank, None) for rank, (i, s) in enumerate(vrows[:want], 1)]
            elif mode == "text":
                rows = [(i, s, None, rank) for rank, (i, s) in enumerate(trows[:want], 1)]
            else:
                rows = fuse(vrows, trows, want, RRF_K, VECTOR_WEIGHT, TEXT_WEIGHT)
            chosen: dict[int, int] = {}
            also_in: dict[int, tuple[str, ...]] = {}
            if collapsed is not None:
                # only the passages that made the cut are attributed (holders looked up)
                chosen, also_in = self._attributed(collapsed, [r[0] for r in rows])
            ranked.append([(chosen.get(r[0], r[0]), r[1], r[2], r[3]) for r in rows])
            also.append({chosen.get(g, g): paths for g, paths in also_in.items()})
        rows_read = reads.rows
        if not rerank:
            return [[with_also_in(hit, extra.get(vid, ())) for vid, hit in searching.ranked_hits(rows, rows_read)]
                    for rows, extra in zip(ranked, also)]
        assert vectors is not None
        reranker = self._reranker()
        out = []
        for vector, fused, extra in zip(vectors, ranked, also):
            candidates = [Candidate(vid, with_also_in(hit, extra.get(vid, ())), context_line(hit))
                          for vid, hit in searching.ranked_hits(fused, rows_read)]
            out.append(reranker.rerank(vector, candidates, k))
        return out

    def with_context(self, hits: list[Hit], budget: int) -> list[Hit]:
        """Each hit grown to its neighbouring chunks, up to `budget` words (`with_context`)."""
        return with_context(self.entity, hits, budget)

    def _collapsed(
        self, vrows: list[tuple[int, float]], trows: list[tuple[int, float]], depth: int, reads: _Reads,
    ) -> _Collapsed:
        """Both lists with one row per passage: its best-ranked copy stands for the group, and
        each list is cut at `depth` distinct passages. Candidates' passage keys and near
        signatures are read as the walk needs them (a list's first `depth` rows, then the rest
        only if copies took places); a candidate's text only where it must be compared word by
        word (a near-duplicate candidate) or has no stored signature (a store not upgraded)."""
        from ragctl.passages import PassageGroups

        texts = self.entity.texts

        def text_of(vid: int) -> str:
            if vid not in reads.rows:
                reads.rows.update(texts.fetch_rows([vid]))
            return reads.rows.get(vid, _NO_ROW)[0]

        groups = PassageGroups(text_of=text_of)
        vkept: list[tuple[int, float]] = []
        tkept: list[tuple[int, float]] = []
        vseen: set[int] = set()
        tseen: set[int] = set()

        def fetch(upto: int) -> None:
            want = {vid for vid, _ in vrows[:upto]} | {vid for vid, _ in trows[:upto]}
            missing = sorted(want - reads.signed.keys())
            if missing:
                signed = texts.signatures(missing)
                reads.signed.update((vid, signed.get(vid, (None, None))) for vid in missing)
                unsigned = [vid for vid in missing if None in reads.signed[vid] and vid not in reads.rows]
                if unsigned:
                    reads.rows.update(texts.fetch_rows(unsigned))

        fetch(depth)
        fetched_to = depth
        # rank 1 of each list, then rank 2, ...: a passage's first member (the copy that stands
        # for it, whose text the hit shows) is its best-ranked copy; stop once both lists hold
        # `depth` distinct passages (the rest of the deeper read is not grouped at all)
        for level in range(max(len(vrows), len(trows))):
            if level >= fetched_to:
                fetched_to = max(len(vrows), len(trows))
                fetch(fetched_to)
            for ranked, keep, seen in ((vrows, vkept, vseen), (trows, tkept, tseen)):
                if level >= len(ranked) or len(keep) >= depth:
                    continue
                vid, score = ranked[level]
                key, near = reads.signed.get(vid, (None, None))
                g = groups.add(vid, None if key is not None and near is not None else text_of(vid), key, near)
                if g not in seen:
                    seen.add(g)
                    keep.append((groups.members[g][0], score))
            if len(vkept) >= depth and len(tkept) >= depth:
                break
        return _Collapsed(vkept, tkept, groups)

    def _attributed(self, collapsed: _Collapsed, firsts: list[int]) -> tuple[dict[int, int], dict[int, tuple[str, ...]]]:
        """For the passages ranked (each by its first member's id): the id of its most specific
        holder, and the paths of its other holders (candidates in the lists, plus every live row
        of the entity holding the same passage key)."""
        from ragctl.passages import most_specific

        groups = collapsed.groups
        owners = self.entity.owners()
        shared = sorted({groups.group[v] for v in firsts if v in groups.group})
        stored = self.entity.holder_ids([groups.keys[m] for g in shared for m in groups.members[g]], groups.keys)
        chosen: dict[int, int] = {}
        also_in: dict[int, tuple[str, ...]] = {}
        for g in shared:
            first = groups.members[g][0]
            holders: dict[int, dict[str, Any]] = {}
            exact: dict[int, dict[str, Any]] = {}  # holders of the best-ranked copy's very text
            for member in groups.members[g]:
                for vid in [member, *stored.get(groups.keys[member], ())]:
                    record = owners.owner(vid)
                    if record is not None:
                        holders[vid] = record
                        if groups.keys[member] == groups.keys[first]:
                            exact[vid] = record
            if not exact:
                continue
            # the hit keeps the text that ranked best; near-duplicates are only listed
            best, record = most_specific(exact.items())
            chosen[first] = best
            others = sorted({str(r["path"]) for v, r in holders.items() if r["doc_id"] != record["doc_id"]})
            if others:
                also_in[first] = tuple(others[:ALSO_IN_MAX])
        return chosen, also_in

    def _reranker(self) -> PassageReranker:
        """The passage cache is keyed by vector id; ids restart when an entity is deleted and
        created again (by any process), so a new entity (another created_at) gets a new cache."""
        generation = (self.entity.meta() or {}).get("created_at")
        if self._rerank is None or self._rerank_generation != generation:
            self._rerank = PassageReranker(self._encode)
            self._rerank_generation = generation
        return self._rerank

    def stale_documents(self) -> int:
        """Documents chunked before contextual chunks (no title/section): `ingest --reindex`."""
        from ragctl.chunking import CHUNKER_VERSION

        return sum(int(r.get("chunker") or 1) < CHUNKER_VERSION for r in self.entity.records().values()
                   if r.get("parser") != "langchain")  # texts given by LangChain: not files to re-chunk


_NO_ROW: RowData = ("", "", "", None, False)


class _Reads:
    """What one search's collapsing read: each candidate's (passage key, near signature), None
    where the store has none, and the chunk rows it needed (reused for the hits)."""

    def __init__(self) -> None:
        self.signed: dict[int, tuple[bytes | None, bytes | None]] = {}
        self.rows: dict[int, RowData] = {}


class _Collapsed(NamedTuple):
    """One query's ranked lists with one row per passage, and the groups they were cut from."""

    vkept: list[tuple[int, float]]
    tkept: list[tuple[int, float]]
    groups: PassageGroups


def context_line(hit: Hit) -> str:
    """The context line a chunk was embedded with (title > section), as far as the hit tells."""
    from ragctl.chunking import CONTEXT_SEPARATOR

    return CONTEXT_SEPARATOR.join(part for part in (hit.title, hit.section) if part)


def with_context(entity: EntityStore, hits: list[Hit], budget: int) -> list[Hit]:
    """Each hit's text grown to its chunk plus neighbouring chunks of the same document, the
    next one first, then the previous one, alternating, up to `budget` words (a chunk longer
    than that is kept whole; a neighbour that does not fit is cut to the words left: the
    start of the next chunk, the end of the previous one). The words two consecutive chunks
    share (their overlap) are taken once, and no words are repeated across hits: a chunk
    that is a hit, or already context of a better hit, is never context again, and a hit
    whose neighbouring chunk a better hit already returned (as its hit or as context) loses
    the words the two chunks share. Shared by `Searcher.search(..., context_words=)` and the
    LangChain store."""
    if budget < 1 or not hits:
        return hits
    from dataclasses import replace

    by_doc = {str(r["doc_id"]): r for r in entity.owners().records}
    spans: dict[int, tuple[int, int]] = {}  # hit index -> the live id range of its document
    ids: list[int] = []
    for n, hit in enumerate(hits):
        record = by_doc.get(hit.doc_id)
        if record is None:
            continue
        first = int(record["first_vector_id"])
        spans[n] = (first, first + int(record["chunk_count"]))
        ids.append(first + hit.chunk)
    used = set(ids)
    reach = max(2, budget // 40)  # neighbours fetched on each side (chunks are >= ~40 words)
    wanted = {i + d for i in ids for d in range(-reach, reach + 1) if d}
    texts = entity.texts.fetch(sorted(wanted - used))
    given: dict[int, list[str]] = {}  # chunk id -> the words of it that better hits returned
    out = []
    for n, hit in enumerate(hits):
        if n not in spans:
            out.append(hit)
            continue
        lo, hi = spans[n]
        vid = lo + hit.chunk
        own = hit.text.split()
        if vid - 1 in given:  # a better hit returned the previous chunk (or its end)
            own = _after_overlap(given[vid - 1], own)
        if vid + 1 in given:  # ... or the next one (or its start)
            own = _before_overlap(own, given[vid + 1])
        trimmed = len(own) < len(hit.text.split())
        given[vid] = own
        left = budget - len(own)
        before: list[list[str]] = []
        after: list[list[str]] = []
        head, tail = own, own  # the words nearest to the next neighbour on each side
        nxt: int | None = vid + 1
        prv: int | None = vid - 1
        while left > 0 and (nxt is not None or prv is not None):
            if nxt is not None:
                if nxt < hi and nxt not in used and nxt in texts:
                    words = _after_overlap(tail, texts[nxt].split())
                    take = words[:left]
                    after.append(take)
                    used.add(nxt)
                    given[nxt] = take
                    left -= len(take)
                    tail = take
                    nxt = nxt + 1 if len(take) == len(words) else None
                else:
                    nxt = None
            if prv is not None and left > 0:
                if prv >= lo and prv not in used and prv in texts:
                    words = _before_overlap(texts[prv].split(), head)
                    take = words[len(words) - left:] if len(words) > left else words
                    before.insert(0, take)
                    used.add(prv)
                    given[prv] = take
                    left -= len(take)
                    head = take
                    prv = prv - 1 if len(take) == len(words) else None
                else:
                    prv = None
        if not before and not after and not trimmed:
            out.append(hit)
            continue
        text = " ".join(own) if trimmed else hit.text
        parts = [" ".join(w) for w in before if w] + [text] + [" ".join(w) for w in after if w]
        out.append(replace(hit, text="\n\n".join(parts)))
    return out


def per_document_hits(hits: list[Hit], k: int, budget: int) -> list[Hit]:
    """At most k documents from a ranked list of chunk hits (best first, 2k of them): each
    document's best-ranked chunk is its hit, in the order of those chunks; then the words left
    of `budget` (counted over all k hits) go to the same documents' next-ranked chunks, in rank
    order (a chunk that would pass the budget is left out, a shorter one after it may fit). A
    hit's text is its chunks in document order, consecutive ones without the words they share
    (their overlap); `chunks` lists them, `also_in` joins theirs. Issue 26: a document's second
    chunk no longer takes the place of another document, and still reaches the reader inside
    its document's hit (docs/retrieval.md, "Per-document hits")."""
    from dataclasses import replace

    groups: list[list[Hit]] = []
    slot: dict[str, int] = {}
    for hit in hits:
        if hit.doc_id not in slot and len(groups) < k:
            slot[hit.doc_id] = len(groups)
            groups.append([hit])
    words = sum(len(g[0].text.split()) for g in groups)
    for hit in hits:
        n = slot.get(hit.doc_id)
        if n is None or hit is groups[n][0]:
            continue
        size = len(hit.text.split())
        if words + size <= budget:
            groups[n].append(hit)
            words += size
    out = []
    for group in groups:
        head = group[0]
        if len(group) == 1:
            out.append(head)
            continue
        ordered = sorted(group, key=lambda h: h.chunk)
        parts = [ordered[0].text]
        previous = ordered[0]
        for hit in ordered[1:]:
            text = hit.text
            if hit.chunk == previous.chunk + 1:  # consecutive chunks: their overlap once
                words_of = hit.text.split()
                rest = _after_overlap(previous.text.split(), words_of)
                if len(rest) < len(words_of):
                    text = " ".join(rest)
            if text:
                parts.append(text)
            previous = hit
        also = tuple(dict.fromkeys(p for h in group for p in h.also_in if p != head.path))[:ALSO_IN_MAX]
        out.append(replace(head, text="\n\n".join(parts), chunks=tuple(h.chunk for h in ordered), also_in=also))
    return out


# fewer words in common than this are taken for a coincidence ("... and the" / "the crate is"),
# not the overlap of consecutive chunks (~20 words), and nothing is trimmed
MIN_OVERLAP_WORDS = 4


def _after_overlap(prev: list[str], nxt: list[str], most: int = 80) -> list[str]:
    """`nxt` without the words it repeats from the end of `prev` (consecutive chunks overlap)."""
    for size in range(min(most, len(prev), len(nxt)), MIN_OVERLAP_WORDS - 1, -1):
        if prev[-size:] == nxt[:size]:
            return nxt[size:]
    return nxt


def _before_overlap(prev: list[str], nxt: list[str], most: int = 80) -> list[str]:
    """`prev` without the words that `nxt` repeats at its start."""
    for size in range(min(most, len(prev), len(nxt)), MIN_OVERLAP_WORDS - 1, -1):
        if prev[-size:] == nxt[:size]:
            return prev[:-size]
    return prev


def with_also_in(hit: Hit, paths: tuple[str, ...]) -> Hit:
    from dataclasses import replace

    return replace(hit, also_in=paths) if paths else hit


def hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "doc_id": hit.doc_id,
        "path": hit.path,
        "score": round(hit.score, 6),
        "text": hit.text,
        "chunk": hit.chunk,
        "vector_rank": hit.vector_rank,
        "text_rank": hit.text_rank,
        "title": hit.title,
        "section": hit.section,
        "page": hit.page,
        "ocr": hit.ocr,
        "also_in": list(hit.also_in),
        "chunks": list(hit.chunks or (hit.chunk,)),
    }
