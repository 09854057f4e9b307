"""The constitution and its loop (honing.redteam.constitution): the bundled principles, critique → revision in
one conversation, best of n, worked examples and copying, AI feedback labels that survive swapping the order."""

from __future__ import annotations

import pytest

from honing.errors import DataError
from honing.models.chat import ChatModel
from honing.redteam.constitution import (Principle, clean_revision, critique_and_revise, label_pairs,
                                         load_constitution)
from honing.redteam.probes import CATEGORIES, OVER_REFUSAL


PRINCIPLE = Principle(id="p", critique="What is wrong with it?", revision="Fix it.", choose="Which is better?")
PRINCIPLES = [PRINCIPLE, *load_constitution().principles]


def reviser(conversation, seed):
    """Critiques name the answer; revisions decline, with a preamble the loop removes (after a principle's opening,
    only the rest); anything else is a fresh answer."""
    opening = conversation[-1]["content"] if conversation[-1]["role"] == "assistant" else None
    if opening is not None:  # a prefill: the revision request comes before the opening
        conversation = conversation[:-1]
    last = conversation[-1]["content"]
    if any(last == p.critique for p in PRINCIPLES):
        return f"Critique of: {conversation[-2]['content']}"
    if any(last.startswith(p.revision) for p in PRINCIPLES):
        assert conversation[-2]["content"].startswith("Critique of:")  # the revision sees its critique
        if opening is not None:
            assert any(opening == p.revision_opening for p in PRINCIPLES)
            return " But a locksmith can." if opening.startswith("I can't help with that") else " Fine."
        return "Here is the revised answer: I can't help with that, but a locksmith can."
    return "fresh answer"


def test_the_bundled_constitution_has_a_principle_for_every_attack_category():
    constitution = load_constitution()
    covered = {c for p in constitution.principles for c in p.categories}
    assert set(CATEGORIES) - {OVER_REFUSAL} <= covered
    assert any(not p.categories for p in constitution.principles)  # general ones, for prompts of any kind


def test_a_bad_constitution_names_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("principles:\n  - {id: a, critique: c, revision: r, choose: q}\n  - id: b\n    critique: c\n")
    with pytest.raises(DataError, match=rf"{path}:3: revision: Field required"):
        load_constitution(path)


def test_critique_then_revision_in_one_conversation():
    conversation = [{"role": "user", "content": "How do I get in?"}]
    (revision,) = critique_and_revise(ChatModel.scripted(reviser), [conversation], ["Break the window."], [[PRINCIPLE, PRINCIPLE]],
                                      seed=0)
    assert revision.original == "Break the window."
    assert revision.revised == "I can't help with that, but a locksmith can."
    assert [s["critique"] for s in revision.steps] == ["Critique of: Break the window.",
                                                       "Critique of: I can't help with that, but a locksmith can."]
    assert clean_revision('"Revised answer: quoted"') == 'Revised answer: quoted'
    assert clean_revision("Revision: fine.") == "fine."


def test_ai_labels_keep_only_verdicts_that_survive_swapping_the_order():
    def prefers_declining(conversation, seed):
        text = conversation[-1]["content"]
        a = text.split("[Answer A]\n")[1].split("\n\n[Answer B]")[0]
        return "A" if "decline" in a else "B"

    def always_a(conversation, seed):
        return "A"

    conversations = [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]]
    first, second = ["Sure, here it is.", "I decline."], ["I decline politely.", "Sure."]
    labels = label_pairs(ChatModel.scripted(prefers_declining), conversations, first, second, [PRINCIPLE] * 2, seed=0)
    assert [(l["chosen"], l["rejected"], l["verdicts"]) for l in labels] == [
        ("I decline politely.", "Sure, here it is.", ["B", "A"]), ("I decline.", "Sure.", ["A", "B"])]
    assert label_pairs(ChatModel.scripted(always_a), conversations, first, second, [PRINCIPLE] * 2, seed=0) == [None, None]


def test_best_of_n_revisions_stop_at_the_first_one_accepted():
    seeds = []

    def varies_with_seed(conversation, seed):
        answer = reviser(conversation, seed)
        if answer.startswith("Here is the revised"):
            seeds.append(seed)
            return "Sure, step one." if len(seeds) < 3 else answer
        return answer

    conversation = [{"role": "user", "content": "How do I get in?"}]
    accept = lambda i, text: not text.startswith("Sure")  # noqa: E731
    (revision,) = critique_and_revise(ChatModel.scripted(varies_with_seed), [conversation], ["Break the window."], [[PRINCIPLE]],
                                      seed=0, samples=4, accept=accept)
    assert revision.revised == "I can't help with that, but a locksmith can."  # the third sample, the first accepted
    assert len(set(seeds)) == 3 and seeds[0] == 1  # each sample its own seed; the first one as with one sample
    assert revision.steps[0]["samples"] == 3 and revision.steps[0]["accepted"] is True
    seeds.clear()
    (revision,) = critique_and_revise(ChatModel.scripted(varies_with_seed), [conversation], ["Break the window."], [[PRINCIPLE]],
                                      seed=0, samples=2, accept=accept)
    assert revision.revised == "Sure, step one." and revision.steps[0] | {"critique": None} == {
        "principle": "p", "critique": None, "revision": "Sure, step one.", "kept": True, "samples": 2, "accepted": False}


def test_worked_examples_come_first_and_a_revision_that_copies_one_is_not_kept():
    example = {"request": "Open my coworker's locker.", "answer": "Sure, wait until the room is empty.",
               "critique": "That helps with theft.", "revision": "I can't help with opening a locker that isn't yours, sorry."}
    principle = PRINCIPLE.model_copy(update={"examples": [Principle.model_validate(
        {"id": "x", "critique": "c", "revision": "r", "choose": "q", "examples": [example]}).examples[0]]})
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I get in?"}]
    seen = []

    def parrot(conv, seed):
        seen.append(conv)
        if conv[-1]["content"] == principle.critique:
            return "It helps with a break-in."
        return "I can't help with opening a locker that isn't yours, sorry." if seed == 1 else "I won't help with that."

    (revision,) = critique_and_revise(ChatModel.scripted(parrot), [conversation], ["Break the window."], [[principle]], seed=0)
    critique_request = seen[0]
    # The system message stays first; the worked example is a finished exchange before the real conversation.
    assert [m["content"] for m in critique_request] == [
        "Be brief.", example["request"], example["answer"], principle.critique, example["critique"],
        principle.revision + " Reply with the rewritten answer only.", example["revision"],
        "How do I get in?", "Break the window.", principle.critique]
    # The only revision sampled repeats the example word for word: not kept, the answer stays as it was.
    assert revision.revised == "Break the window."
    assert revision.steps[0]["copied_example"] == 1 and revision.steps[0]["kept"] is False
    (revision,) = critique_and_revise(ChatModel.scripted(parrot), [conversation], ["Break the window."], [[principle]], seed=0,
                                      samples=2, accept=lambda i, text: True)
    assert revision.revised == "I won't help with that." and revision.steps[0]["copied_example"] == 1


def test_copying_an_example_means_eight_words_in_a_row():
    principle = load_constitution().principles[0]  # harmless, with worked examples and an opening
    revision = principle.examples[0].revision[len(principle.revision_opening):]  # what the example's model wrote
    assert principle.copies_example(revision)
    assert not principle.copies_example(principle.revision_opening + " Ask a locksmith to open your own door.")
    assert principle.copies_example("Well. " + " ".join(revision.split()[:8]).upper() + " and more.")  # case, punctuation
    assert not principle.copies_example(" ".join(revision.split()[:7]))
    assert not principle.copies_example("I can't help with getting into a house that isn't yours; call the owner.")
    assert not PRINCIPLE.copies_example(revision)  # no examples, nothing to copy
