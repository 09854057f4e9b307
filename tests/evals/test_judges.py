"""Judges: verdict and grade parsing, pairwise order swapping, rubric normalisation, and the
OpenAI-compatible endpoint against a local HTTP server."""

from __future__ import annotations

import re

import pytest

from honing.config import JudgeConfig
from honing.errors import HoningError
from honing.evals.judges import (
    build_judge,
    combine_verdicts,
    judge_pairwise,
    judge_rubric,
    parse_score,
    parse_verdict,
)
from tests.fake_openai import serve

_ANSWERS = re.compile(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\n", re.DOTALL)


class ScriptedJudge:
    """A judge whose reply is a function of the conversation; records what it was asked."""

    def __init__(self, reply, name: str = "scripted"):
        self.reply = reply
        self.identity = {"kind": "scripted", "name": name}
        self.asked: list[list[dict[str, str]]] = []

    def texts(self, conversations):
        self.asked += list(conversations)
        return [self.reply(messages) for messages in conversations]


def answers_shown(messages) -> tuple[str, str]:
    return _ANSWERS.search(messages[-1]["content"]).groups()


def prefers_good(messages) -> str:
    """Picks whichever answer says GOOD, whatever its position."""
    a, b = answers_shown(messages)
    if ("GOOD" in a) == ("GOOD" in b):
        return "TIE"
    return "A" if "GOOD" in a else "B"


# ----------------------------------------------------------------------- pairwise


def test_consistent_judge_gives_wins_losses_and_ties():
    judge = ScriptedJudge(prefers_good)
    outcomes = judge_pairwise(judge, ["q1", "q2", "q3"], ["a GOOD answer", "meh", "GOOD"], ["meh", "GOOD too", "GOOD"],
                              [None, "the reference", None])
    assert [o.outcome for o in outcomes] == ["win", "loss", "tie"]
    assert [o.score for o in outcomes] == [1.0, 0.0, 0.5]
    assert all(o.consistent for o in outcomes)
    assert [o.verdicts for o in outcomes] == [("A", "B"), ("B", "A"), ("TIE", "TIE")]
    # Each pair asked twice: candidate first, then base first; the reference shown when there is one.
    assert len(judge.asked) == 6
    assert answers_shown(judge.asked[0]) == ("a GOOD answer", "meh")
    assert answers_shown(judge.asked[3]) == ("meh", "a GOOD answer")
    assert "[Reference answer]\nthe reference" in judge.asked[1][-1]["content"]
    assert "[Reference answer]" not in judge.asked[0][-1]["content"]


def test_position_biased_judge_gives_inconsistent_ties():
    judge = ScriptedJudge(lambda messages: "A")
    outcomes = judge_pairwise(judge, ["q1", "q2"], ["GOOD", "bad"], ["bad", "GOOD"], [None, None])
    assert [(o.outcome, o.score, o.consistent, o.verdicts) for o in outcomes] == [("tie", 0.5, False, ("A", "A"))] * 2


def test_unreadable_verdicts_are_inconsistent_ties():
    outcome = combine_verdicts("A", None)
    assert (outcome.outcome, outcome.consistent) == ("tie", False)
    outcome = combine_verdicts(None, None)
    assert (outcome.outcome, outcome.score, outcome.consistent) == ("tie", 0.5, False)


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), ("B", "B"), ("TIE", "TIE"), ("tie", "TIE"), ("Tie.", "TIE"), ("B.\nBecause it is shorter.", "B"),
    ("**A**", "A"), ('"B"', "B"), ("Answer B", "B"), ("answer A is better", "A"), ("Verdict: TIE", "TIE"),
    ("a better answer is B", "B"), ("After careful thought, the better answer is A.", "A"),
    ("I cannot decide.", None), ("", None), ("Both answers are fine", None), ("Answer: Both are equally good", None),
    ("a", None), ("Absolutely, the first", None), ("Bad question", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


# ----------------------------------------------------------------------- rubric


@pytest.mark.parametrize("reply, score", [
    ("Score: 10", 1.0), ("Score: 1", 0.0), ("score: 4", 1 / 3), ("SCORE 7\nIt is fine.", 2 / 3),
    ("Score: 5.5", 0.5), ("Score: 10/10", 1.0), ("I would give it 4.", 1 / 3),
    ("Score: 11", None), ("Score: 0", None), ("No grade, sorry.", None), ("", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == (pytest.approx(score) if score is not None else None)


def test_judge_rubric_normalises_grades():
    replies = {"q1": "Score: 10", "q2": "Score: 1", "q3": "Score: 42", "q4": "Score: 8"}
    judge = ScriptedJudge(lambda messages: replies[re.search(r"Question:\n(\w+)", messages[-1]["content"]).group(1)])
    grades = judge_rubric(judge, ["q1", "q2", "q3", "q4"], ["a1", "a2", "a3", "a4"], "Be right.", [None, None, "ref", None])
    assert [g for g, _ in grades] == [1.0, 0.0, None, pytest.approx(7 / 9)]
    assert [reply for _, reply in grades] == list(replies.values())
    prompt = judge.asked[2][-1]["content"]
    assert "Rubric:\nBe right." in prompt and "Answer:\na3" in prompt and "[Reference answer]\nref" in prompt
    # No rubric: the default one is used.
    judge_rubric(judge, ["q1"], ["a1"], None, [None])
    assert "Rubric:\nThe answer is correct" in judge.asked[-1][-1]["content"]


def test_local_judge_answers_every_conversation(tiny_model_dir):
    judge = build_judge(JudgeConfig(path=str(tiny_model_dir), max_new_tokens=3), batch_size=2)
    assert judge.identity["kind"] == "local" and judge.identity["path"] == str(tiny_model_dir)
    assert len(judge.identity["sha256"]) == 64
    replies = judge.texts([[{"role": "user", "content": "Which is better?"}], [{"role": "user", "content": "Grade."}],
                           [{"role": "system", "content": "Judge."}, {"role": "user", "content": "A or B?"}]])
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)


# ----------------------------------------------------------------------- endpoint


def _verdict(body):
    return "B" if "first" in body["messages"][-1]["content"] else "Score: 7"


@pytest.fixture()
def endpoint():
    with serve(_verdict, error_body=b"model overloaded") as (handler, base):
        yield handler, base + "/v1/"


def test_endpoint_judge_posts_chat_completions(endpoint, monkeypatch):
    handler, url = endpoint
    monkeypatch.setenv("HONING_TEST_JUDGE_KEY", "secret-key")
    judge = build_judge(JudgeConfig(endpoint=url, endpoint_model="judge-7b", api_key_env="HONING_TEST_JUDGE_KEY",
                                    max_new_tokens=16))
    assert judge.kind == "endpoint" and judge.role == "judge"
    assert judge.identity == {"kind": "endpoint", "endpoint": url, "model": "judge-7b"}  # no key in the record
    messages = [{"role": "system", "content": "judge"}, {"role": "user", "content": "which is first?"}]
    assert judge.texts([messages, [{"role": "user", "content": "grade"}]]) == ["B", "Score: 7"]
    first = next(seen for seen in handler.requests if seen["body"]["messages"] == messages)  # sent concurrently
    assert first["path"] == "/v1/chat/completions"
    assert first["body"] == {"model": "judge-7b", "messages": messages, "temperature": 0, "max_tokens": 16}
    assert first["authorization"] == "Bearer secret-key"


def test_endpoint_judge_without_key_sends_no_authorization(endpoint, monkeypatch):
    handler, url = endpoint
    monkeypatch.delenv("HONING_TEST_JUDGE_KEY", raising=False)
    judge = build_judge(JudgeConfig(endpoint=url, endpoint_model="m", api_key_env="HONING_TEST_JUDGE_KEY"))
    assert judge.texts([[{"role": "user", "content": "first"}]]) == ["B"]
    assert handler.requests[0]["authorization"] is None


def test_endpoint_errors_are_honing_errors(endpoint):
    handler, url = endpoint
    handler.failures = [400]  # not retried: the request itself is wrong
    judge = build_judge(JudgeConfig(endpoint=url, endpoint_model="m"))
    with pytest.raises(HoningError, match=r"^judge endpoint .*/v1/chat/completions answered HTTP 400: 'model overloaded'$"):
        judge.texts([[{"role": "user", "content": "first"}]])
    assert len(handler.requests) == 1
    closed = build_judge(JudgeConfig(endpoint="http://127.0.0.1:9/v1", endpoint_model="m", timeout_s=5, max_retries=0))
    with pytest.raises(HoningError, match="^judge endpoint http://127.0.0.1:9/v1/chat/completions cannot be reached"):
        closed.texts([[{"role": "user", "content": "x"}]])
