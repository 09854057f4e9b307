"""`honing rag eval`: on a three-document index and hand-written QA files, the ranking metrics equal the values
worked out by hand; answer mode scores answers from an OpenAI-compatible server on 127.0.0.1 (found, citations,
groundedness) by a scripted judge and, without one, by word overlap; a bad QA line is one error with file:line."""

from __future__ import annotations

import json
import math
import re
import sys

import pytest

import honing.runs
from honing.config.rag import RagEvalConfig, RagIndexConfig
from honing.errors import DataError
from honing.rag.evaluate import load_questions, parse_claim_verdicts
from honing.rag.metrics import contains_answer
from tests.fake_openai import serve as fake_openai
from tests.rag.facts import write_fact_docs

NDCG_SECOND = 1 / math.log2(3)
"""nDCG@2 of one gold id found at rank 2."""


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    """Three documents of two sections each: chunk #0 holds the activation code, #1 the care instruction."""
    from honing.stages.rag import index

    root = tmp_path_factory.mktemp("rag_eval")
    docs = write_fact_docs(root / "docs")
    index(RagIndexConfig(docs=[str(docs)], index=str(root / "idx")))
    return root / "idx"


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def code_question(thing: str) -> str:
    return f"What is the {thing}'s activation code?"


def test_ranking_metrics_agree_with_hand_computed_values(tiny_index, tmp_path, capsys):
    from honing.stages.rag import evaluate

    data = write_jsonl(tmp_path / "qa.jsonl", [
        {"id": "a", "question": code_question("Zephyr relay"), "sources": ["zephyr.md"], "kind": "lookup"},
        {"id": "b", "question": code_question("Tulip lamp"), "sources": ["tulip.md", "orca.md"], "kind": "multi-hop"},
        {"id": "c", "question": "How often do I wipe the Tulip lamp with a dry cloth?", "chunks": ["tulip.md#0"],
         "kind": "lookup"},
        {"id": "d", "question": code_question("Orca pump"), "sources": ["zephyr.md"], "kind": "lookup"},
        {"id": "e", "question": code_question("Zephyr relay"), "sources": ["manuals/gone.md"], "kind": "lookup"},
        {"id": "f", "question": code_question("Orca pump"), "sources": ["orca.md"], "split": "train"},
    ])
    result = evaluate(RagEvalConfig(data=str(data), index=str(tiny_index), mode="bm25", k=2, candidates=6,
                                    split=None, output=str(tmp_path / "run")))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = {r["id"]: r for r in results["per_question"]}
    # BM25 ranks the chunk sharing the question's words first: the assumption every value below rests on.
    assert rows["a"]["retrieved"] == ["zephyr.md#0", "zephyr.md#1"]
    assert rows["c"]["retrieved"] == ["tulip.md#1", "tulip.md#0"]
    expected = {  # recall@2, MRR, nDCG@2
        "a": (1.0, 1.0, 1.0),                       # one gold source, both chunks from it: counted once
        "b": (0.5, 1.0, 1 / (1 + NDCG_SECOND)),     # two gold sources, one found at rank 1
        "c": (1.0, 0.5, NDCG_SECOND),               # a gold chunk id at rank 2
        "d": (0.0, 0.0, 0.0), "e": (0.0, 0.0, 0.0), "f": (1.0, 1.0, 1.0),
    }
    for qid, (recall, rr, ndcg) in expected.items():
        assert rows[qid]["recall@2"] == pytest.approx(recall), qid
        assert rows[qid]["mrr"] == pytest.approx(rr), qid
        assert rows[qid]["ndcg@2"] == pytest.approx(ndcg), qid
    overall = results["summary"]["all"]
    assert overall["recall@2"]["mean"] == pytest.approx(3.5 / 6) and overall["recall@2"]["n"] == 6
    assert overall["mrr"]["mean"] == pytest.approx(3.5 / 6)
    assert overall["ndcg@2"]["low"] <= overall["ndcg@2"]["mean"] <= overall["ndcg@2"]["high"]
    lookup = results["summary"]["by_kind"]["lookup"]
    assert lookup["recall@2"]["n"] == 4 and lookup["mrr"]["mean"] == pytest.approx(1.5 / 4)
    assert set(results["summary"]["by_kind"]) == {"lookup", "multi-hop"}  # f has no kind: counted in all only
    assert result["metrics"]["recall@2"] == pytest.approx(3.5 / 6)
    # A gold source the index has no document for: warned once with the count, recorded.
    assert results["missing_gold"] == {"e": ["manuals/gone.md"]}
    assert "1 gold ids of 1 questions" in capsys.readouterr().err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    roles = {i["role"]: i for i in record["inputs"]}
    assert roles["rag_index"]["sha256"] == honing.runs.file_sha256(tiny_index / "run.json")
    assert roles["data"]["path"] == str(data) and roles["data"]["sha256"]
    assert record["metrics"]["missing_gold"] == 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| recall@2 | 0.583" in report and "Missed: no gold id in the top 2 (2)" in report

    # The split filter keeps only the questions of that split.
    evaluate(RagEvalConfig(data=str(data), index=str(tiny_index), mode="bm25", k=2, split="train",
                           output=str(tmp_path / "train")))
    assert json.loads((tmp_path / "train" / "results.json").read_text())["questions"] == 1


def _answer(body: dict) -> str:
    """A model that knows nothing: it names the code its context gives for the thing asked, citing that chunk; about
    the Orca pump it adds an invented sentence with an id it was never given."""
    prompt = body["messages"][-1]["content"]
    thing = re.search(r"Question: What is the (.+?)'s activation code", prompt)[1]
    for chunk_id, text in re.findall(r"^\[([^\]\n]+)\]\n(.+)$", prompt, re.MULTILINE):
        if found := re.search(rf"The {re.escape(thing)}'s activation code is ([A-Z]{{2}}-\d{{4}})", text):
            answer = f"The {thing}'s activation code is {found[1]} [{chunk_id}]."
            if thing == "Orca pump":
                answer += " It was assembled on the moon by robots [nowhere.md#9]."
            return answer
    return "I do not know."


def _judge(conversation, seed) -> str:
    """Supported unless it mentions the moon; about the Tulip lamp it replies with no verdict."""
    claims = re.findall(r"^(\d+)\. (.+)$", conversation[-1]["content"], re.MULTILINE)
    if any("Tulip" in claim for _, claim in claims):
        return "I cannot tell."
    return "\n".join(f"{n}: {'no' if 'moon' in claim else 'yes'}" for n, claim in claims)


def _answer_questions(tmp_path):
    return write_jsonl(tmp_path / "qa.jsonl", [
        {"id": "z", "question": code_question("Zephyr relay"), "sources": ["zephyr.md"], "answer": "qx-4471"},
        {"id": "t", "question": code_question("Tulip lamp"), "sources": ["tulip.md"], "answer": "BR-229"},
        {"id": "o", "question": code_question("Orca pump"), "sources": ["orca.md"], "answer": "wrong",
         "aliases": ["MT-6013"]},
    ])


def _answer_or_judge(body: dict) -> str:
    """One server for both: the judge's requests open with a system turn, the answers' do not."""
    messages = body["messages"]
    return _judge(messages, None) if messages[0]["role"] == "system" else _answer(body)


@pytest.mark.parametrize("judged_by", ["scripted", "endpoint", None], ids=["scripted-judge", "endpoint-judge",
                                                                          "overlap"])
def test_answer_mode_scores_found_citations_and_groundedness(tiny_index, tmp_path, judged_by):
    from honing.models.chat import ChatModel
    from honing.stages.rag import evaluate

    data = _answer_questions(tmp_path)
    judge = ChatModel.scripted(_judge, name="scripted-judge", role="judge") if judged_by == "scripted" else None
    with fake_openai(_answer_or_judge) as (handler, url):
        judge_cfg = {"endpoint": f"{url}/v1", "endpoint_model": "judge-m"} if judged_by == "endpoint" else None
        evaluate(RagEvalConfig(data=str(data), index=str(tiny_index), mode="bm25", k=1, candidates=3, answer=True,
                               model={"endpoint": f"{url}/v1", "endpoint_model": "m"}, judge=judge_cfg,
                               output=str(tmp_path / "run")), judge=judge)
    asked = [r["body"]["messages"][-1]["content"] for r in handler.requests]
    assert sum("Context:" in prompt for prompt in asked) == 3
    assert len(asked) == (6 if judged_by == "endpoint" else 3)  # the judge is asked once per answer
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = {r["id"]: r for r in results["per_question"]}
    # Found: normalised (case), whole codes only (BR-229 is not found in BR-2290), aliases count.
    assert [rows[q]["correct"] for q in "zto"] == [1.0, 0.0, 1.0]
    assert rows["o"]["cited"] == ["orca.md#0"] and rows["o"]["cited_unknown"] == ["nowhere.md#9"]
    assert [rows[q]["citations_valid"] for q in "zto"] == [1.0, 1.0, 0.5]
    overall = results["summary"]["all"]
    assert overall["cites_gold"]["mean"] == 1.0 and overall["correct"]["mean"] == pytest.approx(2 / 3)
    if judged_by:
        assert results["groundedness_method"] == "judge"
        assert results["judge"] == ({"kind": "scripted", "name": "scripted-judge"} if judged_by == "scripted" else
                                    {"kind": "endpoint", "endpoint": f"{url}/v1", "model": "judge-m"})
        assert [rows[q]["groundedness"] for q in "zto"] == [1.0, None, 0.5]
        assert rows["o"]["verdicts"] == [True, False]
        assert results["groundedness_unparsed"] == 1  # counted, left out of the mean, never guessed
        assert overall["groundedness"]["mean"] == pytest.approx(0.75) and overall["groundedness"]["n"] == 2
    else:
        assert results["groundedness_method"] == "overlap" and results["judge"] is None
        assert [rows[q]["groundedness"] for q in "zto"] == [1.0, 1.0, 0.5]  # the moon sentence's words are not there
        assert results["groundedness_unparsed"] == 0
    assert results["model"]["kind"] == "endpoint"
    assert "groundedness: " + results["groundedness_method"] in (tmp_path / "run" / "report.md").read_text()


def test_judge_replies_are_read_per_claim_and_never_guessed():
    assert parse_claim_verdicts("1: yes\n2: No\n", 2) == [True, False]
    assert parse_claim_verdicts("**1**: supported\n2. not supported", 2) == [True, False]
    assert parse_claim_verdicts("Yes, it is.", 1) == [True]
    assert parse_claim_verdicts("1: yes", 2) is None  # the second claim has no verdict
    assert parse_claim_verdicts("They look fine to me.", 1) is None


def test_answers_are_found_normalised_and_as_whole_words():
    assert contains_answer("It delivers 210 m³/h [a.md#1].", ["210 m3/h"])
    assert contains_answer("Use the km\u2011f220 filter.", ["KM-F220"])
    assert not contains_answer("Use the KM-F220X filter.", ["KM-F220"])
    assert not contains_answer("The limit is 1200.", ["200"])


@pytest.mark.parametrize("line, message", [
    ('{"question": "x", "sources": [', ":2: not JSON"),
    ('{"sources": ["zephyr.md"]}', ":2: no `question`"),
    ('{"question": "x"}', ":2: no gold ids: give `sources`"),
    ('{"question": "x", "sources": "zephyr.md"}', ":2: `sources` must be a non-empty list"),
    ('{"question": "x", "chunks": ["zephyr.md"]}', ":2: `chunks` holds chunk ids"),
])
def test_a_bad_qa_line_is_an_error_naming_file_line_and_key(tmp_path, line, message):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "ok", "sources": ["zephyr.md"]}, line])
    with pytest.raises(DataError, match=re.escape(f"{data}{message}")):
        load_questions(str(data))


def test_on_the_command_line_a_bad_qa_file_is_one_line_and_no_run(tiny_index, tmp_path, monkeypatch, capsys):
    from honing.cli import main

    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "ok", "sources": ["zephyr.md"]}, "{oops"])
    monkeypatch.setattr(honing.runs, "_CURRENT_RUN", None)
    monkeypatch.setattr(sys, "argv", ["honing", "rag", "eval", str(data), "--index", str(tiny_index), "-o",
                                      str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {data}:2: not JSON") and "\n" not in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match="split 'dev'; its splits: test"):
        load_questions("builtin:kestrelmark", "dev")


def test_the_bundled_sets_are_the_task_splits():
    _, test = load_questions("builtin:kestrelmark")
    _, train = load_questions("builtin:kestrelmark_train")
    assert (len(test), len(train)) == (100, 20) and test[0].gold == ["manuals/aerolith-ap20-manual.md"]


def test_an_output_that_is_a_file_is_refused_before_any_search(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        RagEvalConfig(index=str(tmp_path / "idx"), output=str(tmp_path / "taken"))
