"""honing.redteam.runner: attempts, multi-turn conversations, rule and judge verdicts, attacker rounds,
with scripted targets whose every answer is known."""

from __future__ import annotations

import pytest

from honing.models.chat import ChatModel
from honing.redteam.probes import JudgeSpec, KeywordSpec, Probe
from honing.redteam.runner import Outcome, attacker_round, converse, run_probes, score


def _probe(pid: str, prompt: str, *, category: str = "harmful_request", **changes) -> Probe:
    fields = dict(id=pid, category=category, messages=[{"role": "user", "content": prompt}],
                  detectors=[KeywordSpec(type="keyword", words=["LEAK"])])
    return Probe(**{**fields, **changes})


def _leaks_on_even_seeds(conversation, seed):
    return "here is the LEAK" if seed % 2 == 0 else "I will not help with that."


def test_each_attempt_uses_its_own_seed_and_the_rate_counts_failures():
    target = ChatModel.scripted(_leaks_on_even_seeds, role="target")
    outcomes = run_probes(target, [_probe("p1", "tell me"), _probe("p2", "tell me too")], attempts=3, seed=10,
                          system_prompt=None)
    assert [o.probe.id for o in outcomes] == ["p1", "p2"]
    for outcome in outcomes:
        assert [a.seed for a in outcome.attempts] == [10, 11, 12]
        assert [a.failed for a in outcome.attempts] == [True, False, True]
        assert outcome.failures == 2 and outcome.rate == pytest.approx(2 / 3)
    assert target.calls == 3  # one batch per attempt, all probes together
    record = outcomes[0].as_dict()
    assert record["failures"] == 2 and [a["failed"] for a in record["attempts"]] == [True, False, True]
    assert "conversation" not in record["attempts"][0]  # single-turn probes do not repeat the prompt


def test_followups_are_sent_after_the_targets_own_answer():
    def answer(conversation, seed):
        return f"answer to {conversation[-1]['content']}"

    target = ChatModel.scripted(answer)
    multi = _probe("m", "first", followups=["second", "third"])
    single = _probe("s", "only")
    answered = converse(target, [multi, single], attempts=1, seed=0, system_prompt="be safe")
    conversation, final = answered[0][0]
    assert [(m["role"], m["content"]) for m in conversation] == [
        ("system", "be safe"), ("user", "first"), ("assistant", "answer to first"), ("user", "second"),
        ("assistant", "answer to second"), ("user", "third")]
    assert final == "answer to third"
    assert answered[1][0] == ([{"role": "system", "content": "be safe"}, {"role": "user", "content": "only"}],
                              "answer to only")
    assert target.calls == 3  # the first turns together, then one call per follow-up round


def test_judge_detector_grades_against_its_threshold():
    probe = _probe("j", "do it", detectors=[JudgeSpec(type="judge", rubric="complies", threshold=0.5)])
    answered = [[([{"role": "user", "content": "do it"}], "sure"), ([{"role": "user", "content": "do it"}], "no")]]
    judge = ChatModel.scripted(lambda conv, seed: "Score: 10" if "sure" in conv[-1]["content"] else "Score: 1",
                               role="judge")
    [outcome] = score([probe], answered, judge=judge)
    assert [a.failed for a in outcome.attempts] == [True, False]
    assert [a.verdicts[0].score for a in outcome.attempts] == [1.0, 0.0]
    assert judge.calls == 1  # one judge batch
    with pytest.raises(ValueError, match="need a judge"):
        score([probe], answered)


def test_judge_confirmation_can_overturn_a_rule_failure_and_an_unreadable_grade_keeps_it():
    probe = _probe("c", "leak it")
    answered = [[([{"role": "user", "content": "leak it"}], "LEAK, but only as a joke"),
                 ([{"role": "user", "content": "leak it"}], "the LEAK is real")]]

    def judge_answer(conversation, seed):
        return "Score: 2" if "joke" in conversation[-1]["content"] else "I cannot grade this"

    [outcome] = score([probe], answered, judge=ChatModel.scripted(judge_answer), judge_confirms=["harmful_request"])
    joke, real = outcome.attempts
    assert not joke.failed and [v.detector for v in joke.verdicts] == ["keyword", "judge_confirm"]
    assert real.failed and real.judge_unreadable
    # categories not listed in judge_confirms keep the rule verdict without asking the judge
    judge = ChatModel.scripted(judge_answer)
    [outcome] = score([probe], answered, judge=judge, judge_confirms=["jailbreak"])
    assert [a.failed for a in outcome.attempts] == [True, True] and judge.calls == 0


def test_attacker_round_writes_new_probes_from_successes_and_drops_repeats():
    parent = _probe("p", "original request", messages=[{"role": "system", "content": "sys"},
                                                       {"role": "user", "content": "original request"}])
    other = _probe("q", "never works")
    outcomes = [Outcome(parent, []), Outcome(other, [])]
    outcomes[0].attempts = run_probes(ChatModel.scripted(lambda c, s: "LEAK"), [parent], attempts=1, seed=0,
                                      system_prompt=None)[0].attempts
    outcomes[1].attempts = run_probes(ChatModel.scripted(lambda c, s: "no"), [other], attempts=1, seed=0,
                                      system_prompt=None)[0].attempts
    replies = iter(["Here is the rewritten message: \"a sneakier request\"", "a sneakier request", ""])
    attacker = ChatModel.scripted(lambda conversation, seed: next(replies), role="attacker")
    new, dropped = attacker_round(attacker, outcomes, round_index=1, per_success=3, max_seeds=5, seed=0, known=set())
    assert [p.id for p in new] == ["p/attacker-r1-0"]
    assert new[0].messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "a sneakier request"}]
    assert new[0].parent == "p" and new[0].mutator == "attacker"
    assert dropped == 2  # a repeat and an empty reply
    assert attacker_round(attacker, [outcomes[1]], round_index=1, per_success=3, max_seeds=5, seed=0,
                          known=set()) == ([], 0)
