from __future__ import annotations

import pytest

from slmops.core import Chain
from slmops.data.corpus import Corpora, Hit
from slmops.data.rerank import CrossEncoderScorer, Rerank
from slmops.data.retrieve import RetrievalResult, Retrieve
from slmops.errors import ModelUnavailableError, StepDefinitionError


def result(*texts: str) -> RetrievalResult:
    hits = [
        Hit(
            chunk_id=f"c{i}",
            text=t,
            score=0.0,
            doc_id="d",
            source="d",
            location="",
            section="",
            file_type="text",
        )
        for i, t in enumerate(texts)
    ]
    return RetrievalResult(query="refund time", corpus="kb", version=1, hits=hits)


def overlap(query: str, passages):
    terms = set(query.split())
    return [len(terms & set(p.split())) for p in passages]


def test_rerank_orders_by_the_scorer_and_keeps_top_k(spans_of):
    step = Rerank(overlap, top_k=2)
    run = step.invoke(result("shipping is free", "refund time is five days", "refund policy"))
    assert [h.text for h in run.output.hits] == ["refund time is five days", "refund policy"]
    assert [h.score for h in run.output.hits] == [2.0, 1.0]
    span = spans_of(run.trace_id)["rerank"]["attributes"]
    assert span["slmops.rerank.scorer"] == "overlap"
    assert span["slmops.retrieval.chunk_ids"] == ["c1", "c2"]


def test_a_scorer_returning_the_wrong_number_of_scores_fails():
    with pytest.raises(Exception, match="1 scores for 2 passages"):
        Rerank(lambda q, p: [1.0], name="bad").run(result("a", "b"))


def test_bad_rerank_definitions():
    with pytest.raises(StepDefinitionError, match="unknown reranker"):
        Rerank("magic").run(result("a"))
    with pytest.raises(StepDefinitionError, match="top_k"):
        Rerank(overlap, top_k=0)
    with pytest.raises(ModelUnavailableError, match="not a cross-encoder"):
        CrossEncoderScorer("/nonexistent")


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A randomly initialised 1-layer BERT cross-encoder with the shipped MiniLM tokenizer:
    real code paths, no download."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from slmops.models.loading import BUILTIN_EMBEDDERS, shipped_file

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(shipped_file(*BUILTIN_EMBEDDERS["all-minilm-l6-v2"]))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.model
def test_cross_encoder_reranks_retrieved_passages(workspace, docs, tiny_cross_encoder):
    for i, text in enumerate(["Refunds take five days.", "Shipping is free.", "Refund rules."]):
        (docs / f"{i}.md").write_text(text)
    Corpora(workspace).ingest("kb", [docs])
    retrieved = Retrieve("kb", k=3).run("refund duration")
    # The random model's scores are near-ties (~1e-7 apart) that threaded float reductions can
    # flip between calls, so the check uses the exact scores the step itself received.
    scorer = CrossEncoderScorer(tiny_cross_encoder)
    received: dict[str, float] = {}

    def recording(query, passages):
        scores = scorer(query, passages)
        received.update(zip(passages, scores, strict=True))
        return scores

    output = Chain("qa", [Retrieve("kb", k=3), Rerank(recording, top_k=2)]).run("refund duration")
    best_two = sorted(received, key=received.__getitem__, reverse=True)[:2]
    assert [h.text for h in output.hits] == best_two
    assert len(received) == 3

    # By reference, the model is loaded from the folder on first use.
    by_reference = Rerank(f"cross-encoder:{tiny_cross_encoder}", top_k=2).run(retrieved)
    assert len(by_reference.hits) == 2
    assert {h.chunk_id for h in by_reference.hits} <= {h.chunk_id for h in retrieved.hits}
    assert by_reference.hits[0].score >= by_reference.hits[1].score
