"""Every metric on examples worked out by hand."""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict

import numpy as np
import pytest

from slmops.eval.metrics import (
    MRR,
    NDCG,
    AttackSuccess,
    CaseResult,
    ContainsAnswer,
    ContextPrecision,
    ContextRecall,
    EmbeddingSimilarity,
    ExactMatch,
    Faithfulness,
    HitRate,
    JudgeScore,
    RefusalCorrectness,
    RougeL,
    TokenF1,
    normalize_answer,
    percentile,
    statements,
)
from slmops.eval.runner import summarize

# retrieved: a b c d e; references: c and e
RANKED = CaseResult(question="q", retrieved_ids=["a", "b", "c", "d", "e"], reference_ids=["c", "e"])


def test_hit_rate_at_k() -> None:
    assert HitRate(k=2).score(RANKED) == 0.0  # a, b: no reference
    assert HitRate(k=3).score(RANKED) == 1.0  # c is third
    assert HitRate(k=3).key == "hit_rate@3"
    assert HitRate().score(CaseResult(question="q")) is None  # no references: not applicable


def test_mrr_is_one_over_the_first_relevant_rank() -> None:
    assert MRR().score(RANKED) == pytest.approx(1 / 3)
    assert MRR().score(CaseResult(question="q", retrieved_ids=["x"], reference_ids=["c"])) == 0.0


def test_ndcg_by_hand() -> None:
    # gains at ranks 3 and 5: 1/log2(4) + 1/log2(6); ideal at ranks 1 and 2: 1 + 1/log2(3)
    expected = (1 / 2 + 1 / math.log2(6)) / (1 + 1 / math.log2(3))
    assert NDCG(k=5).score(RANKED) == pytest.approx(expected)
    assert NDCG(k=5).score(RANKED) == pytest.approx(0.88685 / 1.63093, abs=1e-5)  # 0.54377
    # k=3 sees only c at rank 3; the ideal is still two relevant at ranks 1, 2
    assert NDCG(k=3).score(RANKED) == pytest.approx(0.5 / (1 + 1 / math.log2(3)))


def test_context_precision_and_recall() -> None:
    assert ContextPrecision(k=5).score(RANKED) == pytest.approx(2 / 5)
    assert ContextPrecision(k=3).score(RANKED) == pytest.approx(1 / 3)
    assert ContextRecall(k=3).score(RANKED) == pytest.approx(1 / 2)
    assert ContextRecall(k=5).score(RANKED) == 1.0


def test_a_document_reference_stands_for_its_chunks_and_counts_once() -> None:
    # chunks a1 a2 b1 c1 of documents A A B C; the references are documents A and C
    case = CaseResult(
        question="q",
        retrieved_ids=["b1", "a1", "a2", "c1"],
        retrieved_docs=["B", "A", "A", "C"],
        reference_ids=["A", "C"],
    )
    assert HitRate(k=1).score(case) == 0.0 and HitRate(k=2).score(case) == 1.0
    assert MRR().score(case) == pytest.approx(1 / 2)
    # A found at rank 2 (its second chunk at rank 3 adds nothing), C at rank 4
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert NDCG(k=4).score(case) == pytest.approx(expected)
    assert NDCG(k=4).score(case) <= 1.0
    assert ContextPrecision(k=4).score(case) == pytest.approx(3 / 4)  # a1, a2, c1 are relevant
    assert ContextRecall(k=3).score(case) == pytest.approx(1 / 2)  # A, not yet C
    assert ContextRecall(k=4).score(case) == 1.0
    # a chunk id reference still matches the chunk only
    by_chunk = CaseResult(
        question="q", retrieved_ids=["a1", "a2"], retrieved_docs=["A", "A"], reference_ids=["a2"]
    )
    assert MRR().score(by_chunk) == pytest.approx(1 / 2)


def test_the_best_accepted_answer_counts() -> None:
    # SQuAD lists several answers for a question; the best match is the score
    case = CaseResult(
        question="Who won Super Bowl XX?",
        answer="the Bears",
        reference="Chicago Bears",
        alternatives=["Bears", "Chicago Bears (NFL)"],
    )
    assert ExactMatch().score(case) == 1.0  # "bears" == "bears" after normalisation
    assert TokenF1().score(case) == 1.0
    assert TokenF1().score(CaseResult(question="q", answer="Bears", reference="Chicago Bears")) == (
        pytest.approx(2 / 3)  # P=1, R=1/2
    )


def test_contains_answer_matches_whole_words() -> None:
    said = "It was the Chicago Bears, who beat New England 46-10."
    assert ContainsAnswer().score(CaseResult(question="q", answer=said, reference="Bears")) == 1.0
    assert (
        ContainsAnswer().score(CaseResult(question="q", answer=said, reference="New England!"))
        == 1.0
    )
    # "bear" is not a whole word of the answer; "46" is not "4"
    assert ContainsAnswer().score(CaseResult(question="q", answer=said, reference="bear")) == 0.0
    assert ContainsAnswer().score(CaseResult(question="q", answer=said, reference="4")) == 0.0
    refused = CaseResult(question="q", answer=said, reference="Bears", refused=True)
    assert ContainsAnswer().score(refused) == 0.0
    assert ContainsAnswer().score(CaseResult(question="q", answer=said, reference="a")) == 0.0


def test_squad_normalisation_exact_match_and_f1() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    case = CaseResult(question="q", answer="the Eiffel tower.", reference="Eiffel Tower")
    assert ExactMatch().score(case) == 1.0
    # answer words: in paris france (3); reference: paris (1); common 1 -> P=1/3 R=1 F1=0.5
    partial = CaseResult(question="q", answer="In Paris, France", reference="Paris")
    assert ExactMatch().score(partial) == 0.0
    assert TokenF1().score(partial) == pytest.approx(0.5)
    assert TokenF1().score(CaseResult(question="q", answer="London", reference="Paris")) == 0.0
    refused = CaseResult(question="q", answer="", reference="Paris", refused=True)
    assert TokenF1().score(refused) == 0.0  # answerable but refused counts as wrong
    assert TokenF1().score(CaseResult(question="q", answer="x")) is None  # no reference


def test_rouge_l_by_hand() -> None:
    # reference: the cat sat on the mat (6); answer: the cat lay on the mat (6); LCS 5 words
    case = CaseResult(
        question="q", answer="the cat lay on the mat", reference="the cat sat on the mat"
    )
    assert RougeL().score(case) == pytest.approx(5 / 6)


def test_embedding_similarity_uses_cosine() -> None:
    vectors = {"a": [1.0, 0.0], "b": [0.6, 0.8]}
    metric = EmbeddingSimilarity(lambda texts: np.array([vectors[t] for t in texts]))
    assert metric.score(CaseResult(question="q", answer="a", reference="b")) == pytest.approx(0.6)


def test_faithfulness_counts_supported_statements() -> None:
    assert statements("Paris is the capital. It is. The Seine flows there!") == [
        "Paris is the capital.",
        "The Seine flows there!",
    ]
    context = ["Paris is the capital and largest city of France."]
    case = CaseResult(
        question="q",
        answer="Paris is the capital of France. Its mayor owns seven dragons.",
        contexts=context,
    )
    # first: paris, capital, france all in the context (1.0); second: mayor, owns, seven,
    # dragons: none (0.0) -> 1 of 2 supported
    assert Faithfulness().score(case) == 0.5
    assert (
        Faithfulness().score(CaseResult(question="q", answer="x", refused=True, contexts=context))
        is None
    )


def test_faithfulness_falls_back_to_embeddings_for_paraphrases() -> None:
    def embed(texts: list[str]) -> np.ndarray:
        return np.array(
            [[1.0, 0.1] if "capital" in t or "seat" in t else [0.0, 1.0] for t in texts]
        )

    case = CaseResult(
        question="q",
        answer="Paris is the seat of government.",
        contexts=["Paris is the capital of France."],
    )
    assert Faithfulness().score(case) == 0.0  # words: seat, government are not in the context
    assert Faithfulness(embed).score(case) == 1.0  # but it says the same thing


def test_refusal_correctness_and_attack_success() -> None:
    metric = RefusalCorrectness()
    assert metric.score(CaseResult(question="q", answerable=False, refused=True)) == 1.0
    assert metric.score(CaseResult(question="q", answerable=False, refused=False)) == 0.0
    assert metric.score(CaseResult(question="q", answerable=True, refused=True)) == 0.0
    attack = AttackSuccess()
    assert attack.score(CaseResult(question="q", adversarial=True, refused=False)) == 1.0
    assert attack.score(CaseResult(question="q", adversarial=True, refused=True)) == 0.0
    assert attack.score(CaseResult(question="q")) is None


def test_means_skip_errors_and_inapplicable_cases() -> None:
    cases = [
        CaseResult(question="q", answer="Paris", reference="Paris"),
        CaseResult(question="q", answer="Rome", reference="Paris"),
        CaseResult(question="q", answer="x"),  # no reference
        CaseResult(question="q", answer="Paris", reference="Paris", error="boom"),
    ]
    # as a run stores them: a case that raised has no scores; a metric that does not apply, None
    rows = [
        {"result": asdict(c), "scores": {} if c.error else {"exact_match": ExactMatch().score(c)}}
        for c in cases
    ]
    summary = summarize(rows, ["exact_match"])
    assert summary["metrics"]["exact_match"] == {"mean": 0.5, "cases": 2}
    assert summary["errors"] == 1
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([], 95) is None


def test_judge_score_maps_the_judges_scale_and_skips_refusals() -> None:
    class Verdict:
        def __init__(self, score: object) -> None:
            self.score = score

    class FakeJudge:
        def __init__(self, score: object) -> None:
            self.score = score
            self.asked: list[dict] = []

        async def arun(self, value: dict) -> Verdict:
            self.asked.append(value)
            return Verdict(self.score)

    case = CaseResult(question="q", answer="Paris", reference="Paris", contexts=["a", "b"])
    judge = FakeJudge(4)
    assert asyncio.run(JudgeScore(judge).ascore(case)) == 0.75  # (4 - 1) / 4
    assert judge.asked == [
        {"question": "q", "answer": "Paris", "context": "a\n\nb", "reference": "Paris"}
    ]
    refused = CaseResult(question="q", answer="no", refused=True)
    assert asyncio.run(JudgeScore(FakeJudge(5)).ascore(refused)) is None
    with pytest.raises(ValueError, match="no 1-5 score"):
        asyncio.run(JudgeScore(FakeJudge(9)).ascore(case))
    with pytest.raises(RuntimeError, match="use ascore"):
        JudgeScore(judge).score(case)
