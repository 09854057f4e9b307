"""Per-example metrics against hand-computed values; BLEU and chrF against sacrebleu's corpus scores."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from honing.errors import ConfigError
from honing.evals.metrics import (
    METRICS,
    OTHER_LABEL,
    bleu,
    chrf,
    classification_summary,
    exact_match,
    exact_match_normalized,
    json_schema,
    json_valid,
    load_metric,
    macro_f1,
    multiple_choice_scores,
    normalize_answer,
    regex_match,
    rouge_l,
    rouge_l_f1,
    token_f1,
)


# ----------------------------------------------------------------------- text overlap


def test_normalize_answer_follows_squad():
    # lower -> punctuation gone -> articles gone -> whitespace collapsed
    assert normalize_answer("  The Cat, an  apple!  ") == "cat apple"
    # articles only as whole words: "theatre" and "Anna" stay
    assert normalize_answer("A theatre for Anna") == "theatre for anna"


def test_exact_match_raw_and_normalized():
    example = {"reference": "Paris"}
    assert exact_match("  Paris\n", example) == 1.0  # only surrounding whitespace is forgiven
    assert exact_match("paris", example) == 0.0
    assert exact_match("Paris.", example) == 0.0
    assert exact_match_normalized("The paris.", example) == 1.0  # "paris" == "paris"
    assert exact_match_normalized("Paris France", example) == 0.0


def test_multiple_references_take_the_best():
    example = {"references": ["Paris", "City of Light"]}
    assert exact_match("City of Light", example) == 1.0
    # token F1 vs "city of light": [light] vs [city, of, light] -> P=1, R=1/3, F1=2*(1/3)/(4/3)=0.5
    assert token_f1("light", example) == pytest.approx(0.5)


def test_token_f1_hand_computed():
    # [cat, sat] vs [cat, sat, down]: overlap 2, P=2/2=1, R=2/3, F1=2*1*(2/3)/(1+2/3)=0.8
    assert token_f1("the cat sat", {"reference": "a cat sat down"}) == pytest.approx(0.8)
    # multiset overlap: [cat, cat, cat] vs [cat, dog]: overlap min(3,1)=1, P=1/3, R=1/2,
    # F1=2*(1/3)*(1/2)/(1/3+1/2)=(1/3)/(5/6)=0.4
    assert token_f1("cat cat cat", {"reference": "cat dog"}) == pytest.approx(0.4)
    assert token_f1("dog", {"reference": "cat"}) == 0.0
    # empty after normalisation: right only when both are empty
    assert token_f1("the", {"reference": "a"}) == 1.0
    assert token_f1("", {"reference": "cat"}) == 0.0
    assert token_f1("cat", {"reference": "!!"}) == 0.0


def test_rouge_l_with_a_non_contiguous_lcs():
    # [the, cat, sat, on, the, mat] vs [the, cat, was, on, a, mat]:
    # LCS = the cat . on . mat = 4 (with gaps), P = 4/6, R = 4/6, F1 = 2/3
    assert rouge_l("The cat sat on the mat.", {"reference": "the cat was on a mat"}) == pytest.approx(2 / 3)
    # [a, b, c, d] vs [b, x, d]: LCS = b . d = 2, P = 2/4, R = 2/3, F1 = 2*(1/2)*(2/3)/(1/2+2/3) = 4/7
    assert rouge_l_f1("a b c d", "b x d") == pytest.approx(4 / 7)
    assert rouge_l_f1("b x d", "a b c d") == pytest.approx(4 / 7)  # symmetric
    assert rouge_l_f1("same words", "Same, words!") == 1.0
    assert rouge_l_f1("", "anything") == 0.0  # no tokens: 0, as rouge_score


def test_bleu_perfect_and_hand_computed():
    assert bleu("the cat sat on the mat", {"reference": "the cat sat on the mat"}) == 1.0
    # hyp [the cat sat on the mat] vs ref [the cat is on the mat]:
    # p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5 (the cat, on the, the mat), p3 = 1/4 (on the mat),
    # p4 = 0/3 -> exp smoothing 1/(2*3) = 1/6; BP = 1 (equal lengths)
    # BLEU = (5/6 * 3/5 * 1/4 * 1/6) ** (1/4) = (1/48) ** 0.25
    prediction, reference = "the cat sat on the mat", "the cat is on the mat"
    score = bleu(prediction, {"reference": reference})
    assert score == pytest.approx((1 / 48) ** 0.25)
    assert score == pytest.approx(sacrebleu.corpus_bleu([prediction], [[reference]]).score / 100)
    assert bleu("completely different", {"reference": "the cat sat on the mat"}) == 0.0


def test_bleu_uses_all_references_at_once():
    # sacrebleu's multi-reference BLEU: n-grams clipped against every reference together
    prediction, references = "the cat sat on the mat", ["the cat is on the mat", "a cat sat on a mat"]
    expected = sacrebleu.corpus_bleu([prediction], [[references[0]], [references[1]]]).score / 100
    assert bleu(prediction, {"references": references}) == pytest.approx(expected)


def test_chrf_matches_sacrebleu():
    assert chrf("the cat sat on the mat", {"reference": "the cat sat on the mat"}) == 1.0
    prediction, reference = "the cats sat on the mat", "the cat is on the mat"
    expected = sacrebleu.corpus_chrf([prediction], [[reference]]).score / 100
    assert chrf(prediction, {"reference": reference}) == pytest.approx(expected)
    assert 0.0 < expected < 1.0


def test_missing_key_names_the_metric_and_the_key():
    for name in ("exact_match", "exact_match_normalized", "token_f1", "rouge_l", "bleu", "chrf"):
        with pytest.raises(ValueError, match=rf"{name}.*'reference'"):
            METRICS[name]("x", {})
    with pytest.raises(ValueError, match=r"regex_match.*'pattern'"):
        regex_match("x", {})
    with pytest.raises(ValueError, match=r"json_schema.*'schema'"):
        json_schema("{}", {})
    with pytest.raises(ValueError, match="non-empty list"):
        exact_match("x", {"references": "x"})


# ---------------------------------------------------------------------- format checks


def test_regex_match_search_and_fullmatch():
    example = {"pattern": r"\d{4}-\d{2}-\d{2}"}
    assert regex_match("It happened on 2024-03-01.", example) == 1.0
    assert regex_match("It happened in March.", example) == 0.0
    full = {**example, "fullmatch": True}
    assert regex_match("2024-03-01\n", full) == 1.0  # surrounding whitespace aside
    assert regex_match("On 2024-03-01", full) == 0.0
    with pytest.raises(ValueError, match="not a valid regex"):
        regex_match("x", {"pattern": "("})


def test_json_valid_fenced_unfenced_and_invalid():
    assert json_valid('{"a": [1, 2]}', {}) == 1.0
    assert json_valid('  \n{"a": 1}\n', {}) == 1.0
    assert json_valid('```json\n{"a": 1}\n```', {}) == 1.0
    assert json_valid('```\n[1, 2]\n```', {}) == 1.0
    assert json_valid("```JSON\n42\n```", {}) == 1.0
    assert json_valid('{"a": 1,}', {}) == 0.0  # trailing comma
    assert json_valid("{'a': 1}", {}) == 0.0  # single quotes
    assert json_valid('Here it is: {"a": 1}', {}) == 0.0  # only a surrounding fence is removed
    assert json_valid("", {}) == 0.0


def test_json_schema_valid_wrong_type_missing_required():
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    example = {"schema": schema}
    assert json_schema('```json\n{"name": "Ada", "age": 36}\n```', example) == 1.0
    assert json_schema('{"name": "Ada", "age": "36"}', example) == 0.0  # wrong type
    assert json_schema('{"name": "Ada"}', example) == 0.0  # missing required
    assert json_schema('{"name": "Ada", "age": 36', example) == 0.0  # not JSON
    with pytest.raises(ValueError, match="schema is invalid"):
        json_schema("{}", {"schema": {"type": "not-a-type"}})


# ---------------------------------------------------------------------------- registry


def test_load_metric_by_name():
    assert set(METRICS) == {
        "exact_match", "exact_match_normalized", "contains_reference", "token_f1", "rouge_l", "bleu", "chrf",
        "regex_match", "json_valid", "json_schema",
    }  # fmt: skip
    assert load_metric("token_f1") is token_f1


def test_load_custom_metric(tmp_path, monkeypatch):
    (tmp_path / "honing_test_custom_metric.py").write_text(
        "def starts_with_yes(prediction, example):\n"
        "    return float(prediction.lower().startswith('yes'))\n"
        "NOT_A_FUNCTION = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    metric = load_metric("honing_test_custom_metric:starts_with_yes")
    assert metric("Yes, it is.", {}) == 1.0
    assert metric("No.", {}) == 0.0
    with pytest.raises(ConfigError, match="has no attribute 'missing'"):
        load_metric("honing_test_custom_metric:missing")
    with pytest.raises(ConfigError, match="is not a function"):
        load_metric("honing_test_custom_metric:NOT_A_FUNCTION")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        load_metric("no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="module:function"):
        load_metric("honing_test_custom_metric:")


def test_unknown_metric_lists_the_allowed_names():
    with pytest.raises(ConfigError) as raised:
        load_metric("accuracy")
    message = str(raised.value)
    assert "'accuracy'" in message
    for name in METRICS:
        assert name in message


# ---------------------------------------------------------------------- multiple choice


def test_multiple_choice_acc_and_acc_norm_disagree():
    # Loglikelihoods are <= 0, so a choice with the highest total also has the highest total per
    # character once it is the longer one; they disagree when a short choice wins on total and a
    # long one per character, which is the length bias acc_norm exists to remove.
    choices = [" Lyon", " the capital of France"]  # 5 and 22 characters
    loglikelihoods = [-1.5, -4.4]
    # acc: argmax(-1.5, -4.4) = 0 != gold 1 -> 0.0
    # acc_norm: -1.5/5 = -0.3, -4.4/22 = -0.2 -> argmax 1 == gold -> 1.0
    assert multiple_choice_scores(loglikelihoods, choices, gold=1) == {"acc": 0.0, "acc_norm": 1.0}
    # and the other way round when the short choice is gold
    assert multiple_choice_scores(loglikelihoods, choices, gold=0) == {"acc": 1.0, "acc_norm": 0.0}
    # agreement: per character -1.5/5 = -0.3 vs -8.8/22 = -0.4 -> both pick choice 0
    assert multiple_choice_scores([-1.5, -8.8], choices, gold=0) == {"acc": 1.0, "acc_norm": 1.0}


def test_multiple_choice_ties_and_errors():
    # ties go to the first choice, as numpy's argmax
    assert multiple_choice_scores([-1.0, -1.0], ["ab", "cd"], gold=0) == {"acc": 1.0, "acc_norm": 1.0}
    with pytest.raises(ValueError, match="2 loglikelihoods for 3 choices"):
        multiple_choice_scores([-1.0, -2.0], ["a", "b", "c"], gold=0)
    with pytest.raises(ValueError, match="out of range"):
        multiple_choice_scores([-1.0, -2.0], ["a", "b"], gold=2)


# ----------------------------------------------------------------------- classification


def test_classification_summary_by_hand():
    labels = ["pos", "pos", "pos", "neg", "neg", "neu"]
    predictions = ["pos", "neg", "pos", "neg", "maybe", "pos"]
    summary = classification_summary(predictions, labels, ["pos", "neg", "neu"])
    # correct: rows 0, 2, 3 -> accuracy 3/6
    assert summary["accuracy"] == pytest.approx(0.5)
    # pos: TP=2, predicted 3 (rows 0, 2, 5), gold 3 -> P=2/3, R=2/3, F1=2/3
    # neg: TP=1, predicted 2 (rows 1, 3), gold 2 -> P=1/2, R=1/2, F1=1/2
    # neu: TP=0, predicted 0, gold 1 -> P=0, R=0, F1=0
    # macro-F1 = (2/3 + 1/2 + 0) / 3 = 7/18
    assert summary["macro_f1"] == pytest.approx(7 / 18)
    assert macro_f1(predictions, labels, ["pos", "neg", "neu"]) == pytest.approx(7 / 18)
    per_label = summary["per_label"]
    assert per_label["pos"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert per_label["neg"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per_label["neu"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # rows: gold, columns: predicted; "maybe" is outside the label set -> "<other>"
    assert summary["confusion"] == {
        "pos": {"pos": 2, "neg": 1, "neu": 0, OTHER_LABEL: 0},
        "neg": {"pos": 0, "neg": 1, "neu": 0, OTHER_LABEL: 1},
        "neu": {"pos": 1, "neg": 0, "neu": 0, OTHER_LABEL: 0},
    }


def test_macro_f1_leaves_out_labels_that_never_occur():
    # "neu" is neither gold nor predicted: left out of the mean.
    # pos: TP=1, predicted 1, gold 2 -> P=1, R=1/2, F1=2/3; neg: TP=1, predicted 2, gold 1 -> P=1/2, R=1, F1=2/3
    labels, predictions = ["pos", "pos", "neg"], ["pos", "neg", "neg"]
    assert macro_f1(predictions, labels, ["pos", "neg", "neu"]) == pytest.approx(2 / 3)
    summary = classification_summary(predictions, labels, ["pos", "neg", "neu"])
    assert summary["per_label"]["neu"]["support"] == 0
    assert math.isnan(macro_f1([], [], ["pos"]))


def test_classification_rejects_bad_input():
    with pytest.raises(ValueError, match="not in the label set"):
        classification_summary(["pos"], ["other"], ["pos", "neg"])
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        macro_f1(["pos", "neg"], ["pos"], ["pos", "neg"])


def test_contains_reference_finds_a_fact_inside_a_sentence_as_whole_words():
    from honing.evals.metrics import contains_reference

    assert contains_reference("The AP-20 delivers 210 m³/h.", {"references": ["210 m3/h"]}) == 1.0  # NFKC: ³ is 3
    assert contains_reference("Hold it for 1200 ms", {"reference": "200"}) == 0.0  # not inside a longer number
    assert contains_reference("Firmware 3.2.0 fixed it", {"references": ["4.0", "3.2.0"]}) == 1.0  # any reference
    assert contains_reference("about THIRTY days", {"reference": "thirty days"}) == 1.0
    assert contains_reference("no idea", {"reference": "thirty days"}) == 0.0
    for text in ("It is 200.5 bar", "about 3,200 units", "set to -200", "version 200.1"):  # a part of a number
        assert contains_reference(text, {"reference": "200"}) == 0.0, text
    assert contains_reference("200-300 rules, or 200.", {"reference": "200"}) == 1.0
    with pytest.raises(ValueError, match="reference"):
        contains_reference("x", {"answer_key": "y"})
