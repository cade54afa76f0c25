#!/usr/bin/env python3
"""The per-document baseline ragctl is measured against (issue 4, item 7).

What popular RAG frameworks do out of the box, written out plainly (no LangChain needed):

  for each file, one at a time:
      load it with a simple reader      (text as is; HTML: BeautifulSoup get_text, like
                                         BSHTMLLoader; PDF: pypdf, like PyPDFLoader; DOCX:
                                         python-docx paragraphs)
      split it into ~1000-character chunks with 200 characters of overlap
                                        (LangChain's RecursiveCharacterTextSplitter defaults,
                                         re-implemented inline below)
      embed the chunks with sentence-transformers, fp32, batch 32
      add the vectors to the entity's FAISS index (IndexFlatIP on normalised vectors)
  write each entity's index at the end

Usage::

    python scripts/baseline_per_document.py --corpus DIR [--json] [--model PATH]
    python scripts/baseline_per_document.py --entities 5 --docs 20 --seed 0 [--json]

DIR is laid out like `ragctl ingest`'s ROOT (one subdirectory per entity). Without
--corpus, the same seeded synthetic corpus as `ragctl bench` is generated in a temp dir.
Timing: `load_s` (model load + one small warm-up batch) is reported apart from `seconds`
(the loop: read, split, embed, add, write); docs/s and chunks/s are over `seconds`, i.e.
model load EXCLUDED, as in `ragctl bench`. `docs_per_s_incl_load` includes it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK_SIZE, CHUNK_OVERLAP = 1000, 200
TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".rst", ".csv", ".tsv", ".json", ".log", ".xml", ".eml"}


# --------------------------------------------------------------------------- loading
def load_text(path: Path) -> str | None:
    """A simple reader per type; None for what a simple loader would not handle."""
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm", ".xhtml"):
        from bs4 import BeautifulSoup

        return BeautifulSoup(path.read_bytes(), "lxml").get_text()
    if suffix == ".pdf":
        from pypdf import PdfReader

        return "\n\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)
    if suffix == ".docx":
        import docx

        return "\n\n".join(p.text for p in docx.Document(str(path)).paragraphs)
    if suffix in TEXT_SUFFIXES:
        return path.read_text(encoding="utf-8", errors="replace")
    return None


# --------------------------------------------------------------------------- splitting
# RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200) with its defaults:
# separators ["\n\n", "\n", " ", ""], keep_separator=True (at the start of the next piece),
# length_function=len, strip_whitespace=True. Same algorithm as langchain_text_splitters.
SEPARATORS = ["\n\n", "\n", " ", ""]


def _split_with_separator(text: str, separator: str) -> list[str]:
    if not separator:
        return [c for c in text]
    parts = re.split(f"({re.escape(separator)})", text)
    pieces = [parts[0]] + [parts[i] + parts[i + 1] for i in range(1, len(parts) - 1, 2)]
    if len(parts) % 2 == 0:
        pieces += parts[-1:]
    return [p for p in pieces if p != ""]


def _join(docs: list[str], separator: str) -> str | None:
    text = separator.join(docs).strip()
    return text or None


def _merge_splits(splits: list[str], separator: str) -> list[str]:
    sep_len = len(separator)
    docs: list[str] = []
    current: list[str] = []
    total = 0
    for d in splits:
        length = len(d)
        if total + length + (sep_len if current else 0) > CHUNK_SIZE:
            if current:
                doc = _join(current, separator)
                if doc is not None:
                    docs.append(doc)
                while total > CHUNK_OVERLAP or (total + length + (sep_len if current else 0) > CHUNK_SIZE and total > 0):
                    total -= len(current[0]) + (sep_len if len(current) > 1 else 0)
                    current = current[1:]
        current.append(d)
        total += length + (sep_len if len(current) > 1 else 0)
    doc = _join(current, separator)
    if doc is not None:
        docs.append(doc)
    return docs


def split_text(text: str, separators: list[str] = SEPARATORS) -> list[str]:
    separator, rest = separators[-1], []
    for i, sep in enumerate(separators):
        if sep == "":
            separator = sep
            break
        if sep in text:
            separator, rest = sep, separators[i + 1 :]
            break
    chunks: list[str] = []
    good: list[str] = []
    for piece in _split_with_separator(text, separator):
        if len(piece) < CHUNK_SIZE:
            good.append(piece)
            continue
        if good:
            chunks.extend(_merge_splits(good, ""))
            good = []
        chunks.extend(split_text(piece, rest) if rest else [piece])
    if good:
        chunks.extend(_merge_splits(good, ""))
    return chunks


# --------------------------------------------------------------------------- the loop
def run(corpus: Path, model_path: str, out_dir: Path) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    import faiss
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    model.encode(["warm-up sentence one.", "a second, slightly longer warm-up sentence."], batch_size=32)
    dim = model.get_sentence_embedding_dimension()
    load_s = time.perf_counter() - t0

    started = time.perf_counter()
    docs = chunks = skipped = failed = 0
    encode_s = 0.0
    for entity_dir in sorted(p for p in corpus.iterdir() if p.is_dir() and not p.name.startswith(".")):
        index = faiss.IndexFlatIP(dim)
        store: list[tuple[str, str]] = []  # the docstore: (path, chunk text)
        for path in sorted(entity_dir.rglob("*")):
            if not path.is_file() or any(part.startswith(".") for part in path.relative_to(entity_dir).parts):
                continue
            try:
                text = load_text(path)
            except Exception:  # noqa: BLE001 - the baseline counts a file it cannot read
                failed += 1
                continue
            if text is None or not text.strip():
                skipped += 1
                continue
            pieces = split_text(text)
            t1 = time.perf_counter()
            vectors = model.encode(pieces, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
            encode_s += time.perf_counter() - t1
            index.add(np.asarray(vectors, dtype=np.float32))
            store.extend((str(path.relative_to(entity_dir)), p) for p in pieces)
            docs += 1
            chunks += len(pieces)
        faiss.write_index(index, str(out_dir / f"{entity_dir.name}.faiss"))
        (out_dir / f"{entity_dir.name}.json").write_text(json.dumps(store))
    seconds = time.perf_counter() - started
    return {
        "docs": docs,
        "chunks": chunks,
        "skipped": skipped,
        "failed": failed,
        "seconds": round(seconds, 3),
        "encode_s": round(encode_s, 3),
        "load_s": round(load_s, 3),
        "docs_per_s": round(docs / seconds, 3) if seconds else 0.0,
        "chunks_per_s": round(chunks / seconds, 3) if seconds else 0.0,
        "docs_per_s_incl_load": round(docs / (seconds + load_s), 3),
        "precision": "fp32",
        "chunking": f"characters: {CHUNK_SIZE}/{CHUNK_OVERLAP}",
        "corpus": str(corpus),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--corpus", type=Path, help="tree laid out like ingest's ROOT")
    ap.add_argument("--entities", type=int, default=5, help="generated corpus: entities (without --corpus)")
    ap.add_argument("--docs", type=int, default=20, help="generated corpus: documents per entity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="model directory [default: the packaged all-MiniLM-L6-v2]")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = ap.parse_args(argv)

    from ragctl.model_spec import resolve_model

    model_path = args.model or str(resolve_model().path)
    with tempfile.TemporaryDirectory(prefix="ragctl-baseline-") as tmp:
        corpus = args.corpus
        if corpus is None:
            from ragctl.bench import generate_corpus

            corpus = Path(tmp) / "corpus"
            generate_corpus(corpus, args.entities, args.docs, args.seed)
        out = Path(tmp) / "index"
        out.mkdir()
        result = run(corpus, model_path, out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['docs']} docs, {result['chunks']} chunks in {result['seconds']:.2f} s "
            f"(+ {result['load_s']:.2f} s model load): {result['docs_per_s']:.2f} docs/s, "
            f"{result['chunks_per_s']:.1f} chunks/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
