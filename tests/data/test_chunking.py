from __future__ import annotations

import itertools

import pytest

from slmops.data.chunking import Chunker
from slmops.data.documents import Block, Document


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word (the real one is tested with the corpus)."""
    return len(text.split())


def doc(*blocks: Block) -> Document:
    return Document("d.md", "/tmp/d.md", "markdown", list(blocks))


def para(text: str, line: int) -> Block:
    return Block(text, line_start=line, line_end=line)


def test_headings_start_chunks_and_name_their_section():
    chunker = Chunker(words, chunk_tokens=50, overlap_tokens=0)
    chunks = chunker.chunk(
        doc(
            Block("Guide", heading=True, level=1),
            para("alpha beta", 3),
            Block("Install", heading=True, level=2),
            para("gamma delta", 7),
            Block("Other", heading=True, level=1),
            para("epsilon", 11),
        )
    )
    assert [(c.section, c.text) for c in chunks] == [
        ("Guide", "alpha beta"),
        ("Guide > Install", "gamma delta"),
        ("Other", "epsilon"),
    ]
    assert [c.location for c in chunks] == ["lines 3-3", "lines 7-7", "lines 11-11"]


def test_paragraphs_pack_within_the_budget_with_overlap():
    chunker = Chunker(words, chunk_tokens=20, overlap_tokens=5)
    paragraphs = [para(" ".join(f"w{p}x{i}" for i in range(4)), p) for p in range(1, 11)]
    chunks = chunker.chunk(doc(*paragraphs))
    assert all(c.tokens <= 20 for c in chunks)
    assert len(chunks) == 3
    # each new chunk starts with the last paragraph of the previous one (4 tokens <= 5 overlap)
    for before, after in itertools.pairwise(chunks):
        assert after.text.split("\n\n")[0] == before.text.split("\n\n")[-1]
    assert [c.ordinal for c in chunks] == [0, 1, 2]


def test_long_paragraphs_split_at_sentences_then_words():
    chunker = Chunker(words, chunk_tokens=16, overlap_tokens=0)
    sentences = " ".join(f"Sentence {i} has exactly five." for i in range(6))
    [*chunks] = chunker.chunk(doc(para(sentences, 1)))
    assert all(c.tokens <= 16 for c in chunks)
    assert all(c.text.endswith("five.") for c in chunks)  # never cut inside a sentence
    run_on = " ".join(f"w{i}" for i in range(40))
    pieces = chunker.chunk(doc(para(run_on, 1)))
    assert [c.tokens for c in pieces] == [16, 16, 8]
    assert " ".join(c.text for c in pieces) == run_on


def test_chunk_ids_are_stable_and_depend_on_document_and_text():
    chunker = Chunker(words, chunk_tokens=50, overlap_tokens=0)
    first = chunker.chunk(doc(para("same text", 1)))[0]
    moved = chunker.chunk(doc(para("same text", 9)))[0]
    other = chunker.chunk(Document("e.md", "/tmp/e.md", "markdown", [para("same text", 1)]))[0]
    assert first.chunk_id == moved.chunk_id != other.chunk_id
    assert first.text_hash == other.text_hash


def test_bad_budgets_are_refused():
    with pytest.raises(ValueError, match="chunk_tokens"):
        Chunker(words, chunk_tokens=8)
    with pytest.raises(ValueError, match="overlap_tokens"):
        Chunker(words, chunk_tokens=100, overlap_tokens=60)


def test_real_tokenizer_budget(shipped_embedder):
    chunker = Chunker(shipped_embedder.count_tokens, chunk_tokens=32, overlap_tokens=8)
    text = " ".join(f"The {i}th sentence mentions tokenization budgets." for i in range(30))
    chunks = chunker.chunk(doc(para(text, 1)))
    assert len(chunks) > 5
    assert all(shipped_embedder.count_tokens(c.text) <= 32 + 2 for c in chunks)
