"""Search: reciprocal rank fusion by hand, BM25 / dense / hybrid retrieval on a tiny index, a local cross-encoder
reranker, and `honing rag ask` with a scripted model: the prompt labels chunks, citations are checked."""

from __future__ import annotations

import pytest

from honing.config.rag import RagAskConfig, RagIndexConfig
from honing.rag.ask import check_citations, cited_ids, rag_prompt
from honing.rag.search import Hit, Retriever, reciprocal_rank_fusion
from honing.stages.rag import ask, index

DOCS = {
    "reset.md": "# Reset\n\nTo reset the Zephyr 3000, hold the blue button for ten seconds.\n",
    "warranty.md": "# Warranty\n\nThe warranty lasts 18 months from purchase and excludes water damage.\n",
    "returns.md": "# Returns\n\nReturns are accepted within 30 days when you keep the receipt.\n",
    "battery.md": "# Battery\n\nCharge the battery fully before first use; a full charge takes two hours.\n",
}


def test_reciprocal_rank_fusion_by_hand():
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60))
    assert fused == pytest.approx({"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63})
    assert [item for item, _ in reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)] == ["a", "c", "b", "d"]
    # with k=1 a second vote outweighs a first place: y = 1/3 + 1/2 > x = 1/2
    assert reciprocal_rank_fusion([["x", "y"], ["y"]], k=1) == [("y", pytest.approx(1 / 3 + 1 / 2)), ("x", 0.5)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    for name, text in DOCS.items():
        (root / name).write_text(text)
    index(RagIndexConfig(docs=[str(root)], index=str(root / "idx")))
    return root


def sources(hits) -> list[str]:
    return [hit.chunk["source"] for hit in hits]


@pytest.mark.parametrize("mode, question", [
    ("bm25", "how many months does the warranty last"),
    ("dense", "How long is the product guaranteed?"),
    ("hybrid", "How long is the warranty guarantee?"),
])
def test_each_mode_finds_the_right_chunk(built, mode, question):
    retriever = Retriever(built / "idx")
    hits = retriever.search(question, RagAskConfig(question=question, index="x", mode=mode, k=2))
    retriever.close()
    assert sources(hits)[0] == "warranty.md"
    assert set(hits[0].ranks) == ({"bm25", "dense"} if mode == "hybrid" else {mode})


def test_hybrid_scores_are_the_fused_ranks(built):
    retriever = Retriever(built / "idx")
    hits = retriever.search("blue button reset", RagAskConfig(question="q", index="x", k=4, rrf_k=60))
    retriever.close()
    for hit in hits:
        assert hit.score == pytest.approx(sum(1 / (60 + rank) for rank in hit.ranks.values() if rank is not None))


def test_a_local_cross_encoder_reorders_the_candidates(built, tmp_path):
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from honing.rag.embed import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "reranker")
    tokenizer.save_pretrained(tmp_path / "reranker")
    question = "battery charge"
    retriever = Retriever(built / "idx", reranker=str(tmp_path / "reranker"))
    hits = retriever.search(question, RagAskConfig(question=question, index="x", k=4))
    retriever.close()
    expected = CrossEncoder(str(tmp_path / "reranker")).predict([(question, h.chunk["text"]) for h in hits])
    assert [hit.score for hit in hits] == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-5)
    assert all("fused" in hit.ranks for hit in hits)


def hit(chunk_id: str, text: str = "some text") -> Hit:
    return Hit({"id": chunk_id, "path": chunk_id.split("#")[0], "text": text, "headings": []}, 1.0)


def test_the_prompt_labels_each_chunk_and_asks_for_citations():
    prompt = rag_prompt("How long?", [hit("a.md#0", "Eighteen months."), hit("b.md#2", "Thirty days.")])
    assert "[a.md#0]\nEighteen months." in prompt and "[b.md#2]\nThirty days." in prompt
    assert "cite the id" in prompt and "[a.md#0]" in prompt.split("Context:")[0]
    assert prompt.endswith("Question: How long?")


def test_citations_are_read_and_checked_against_the_retrieved_ids():
    answer = "It lasts 18 months [a.md#0]. Returns take 30 days [b.md#2, x.md#9]; see also [a.md#0; c.md#1]."
    assert cited_ids(answer) == ["a.md#0", "b.md#2", "x.md#9", "c.md#1"]
    citations = check_citations(answer, [hit("a.md#0"), hit("b.md#2")])
    assert citations.retrieved == ["a.md#0", "b.md#2"] and citations.unknown == ["x.md#9", "c.md#1"]


def test_ask_answers_through_the_chat_model_and_reports_its_sources(built, capsys):
    from honing.models.chat import ChatModel

    def answer(conversation, seed):
        first_label = conversation[-1]["content"].split("Context:")[1].split("]")[0].strip().lstrip("[")
        return f"Hold the blue button for ten seconds [{first_label}] [made-up.md#3]."

    cfg = RagAskConfig(question="How do I reset the Zephyr?", index=str(built / "idx"), k=2)
    result = ask(cfg, model=ChatModel.scripted(answer))
    top = result["chunks"][0]["id"]
    assert top == "reset.md#0"
    assert result["cited"] == [top] and result["cited_unknown"] == ["made-up.md#3"]
    printed = capsys.readouterr()  # the answer and its sources on stdout, the warning on stderr
    out = printed.out
    assert out.index("Hold the blue button") < out.index("sources:") < out.index(f"{top}  (cited)")
    assert "cites ids that were not retrieved: made-up.md#3" in printed.err


def test_fewer_candidates_than_k_is_refused_at_load():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"candidates \(20\) must be at least k \(30\)"):
        RagAskConfig(question="q", index="i", k=30)
