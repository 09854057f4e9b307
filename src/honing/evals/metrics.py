"""Per-example metrics: each scores one prediction against one example and returns a float in [0, 1].

Every metric has the signature `fn(prediction, example) -> float`, so a task names its metrics
in config and the evaluation loop never special-cases one. The example supplies what the
metric needs:

    reference / references   exact_match, exact_match_normalized, token_f1, rouge_l, bleu, chrf
    pattern (+ fullmatch)    regex_match
    schema                   json_schema
    (nothing)                json_valid

With several `references` the score is the best over them, except BLEU, which takes them all
at once (sacrebleu's multi-reference BLEU, the number papers report). Also here: the
multiple-choice scores of lm-evaluation-harness and a classification summary (accuracy,
macro-F1, confusion matrix), which are not per-example metrics but score the same runs.
"""

from __future__ import annotations

import importlib
import json
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from honing.errors import ConfigError

Metric = Callable[[str, Mapping[str, Any]], float]

OTHER_LABEL = "<other>"
"""Confusion-matrix column for predictions outside the label set."""


# ---------------------------------------------------------------------------------- helpers


def _require(example: Mapping[str, Any], key: str, metric: str) -> Any:
    if key not in example:
        raise ValueError(f"metric {metric!r} needs the key {key!r} in each example; found {sorted(example)}")
    return example[key]


def _references(example: Mapping[str, Any], metric: str) -> list[str]:
    """`references` (a list) wins over `reference` (a string); a malformed value is an error, not a 0."""
    if "references" in example:
        references = example["references"]
        if isinstance(references, str) or not isinstance(references, Sequence) or not references:
            raise ValueError(f"metric {metric!r}: 'references' must be a non-empty list of strings")
    elif "reference" in example:
        references = [example["reference"]]
    else:
        raise ValueError(f"metric {metric!r} needs the key 'reference' (or 'references') in each example")
    if not all(isinstance(r, str) for r in references):
        raise ValueError(f"metric {metric!r}: every reference must be a string")
    return list(references)


def _best(score: Callable[[str, str], float], prediction: str, example: Mapping[str, Any], metric: str) -> float:
    return max(score(prediction, reference) for reference in _references(example, metric))


# ---------------------------------------------------------------------------- text overlap

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation, in SQuAD's order, so our EM/F1 match the published script."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, example: Mapping[str, Any]) -> float:
    """Exact string equality; only surrounding whitespace is forgiven (generations end in newlines)."""
    return _best(lambda p, r: float(p.strip() == r.strip()), prediction, example, "exact_match")


def exact_match_normalized(prediction: str, example: Mapping[str, Any]) -> float:
    """Exact match after SQuAD normalisation: case, punctuation and articles do not count."""
    return _best(
        lambda p, r: float(normalize_answer(p) == normalize_answer(r)), prediction, example, "exact_match_normalized"
    )


def contains_reference(prediction: str, example: Mapping[str, Any]) -> float:
    """1 when a reference appears in the answer as a whole word or number, after NFKC, case folding and one kind of
    dash ("210 m3/h" in "The AP-20 delivers 210 m³/h."; "200" is not found in "1200"): a short fact inside a
    sentence. The same test as `honing rag eval`'s answer_found."""
    from honing.rag.metrics import contains_answer

    return float(contains_answer(prediction, _references(example, "contains_reference")))


def _token_f1(prediction: str, reference: str) -> float:
    predicted_tokens = normalize_answer(prediction).split()
    reference_tokens = normalize_answer(reference).split()
    if not predicted_tokens or not reference_tokens:
        # SQuAD: an empty answer is right only when the reference is empty too.
        return float(predicted_tokens == reference_tokens)
    overlap = sum((Counter(predicted_tokens) & Counter(reference_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted_tokens)
    recall = overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, example: Mapping[str, Any]) -> float:
    """SQuAD token F1: partial credit for answers that overlap the reference (multiset overlap)."""
    return _best(_token_f1, prediction, example, "token_f1")


def _rouge_tokens(text: str) -> list[str]:
    # rouge_score's default tokenizer (no stemming); text with no ASCII letters or digits has no tokens.
    return re.findall(r"[a-z0-9]+", text.lower())


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)  # one DP row: O(len(b)) memory
    for token in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            current[j] = previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


def rouge_l_f1(a: str, b: str) -> float:
    """ROUGE-L F1 (beta = 1) between two texts; symmetric, 0.0 when either has no tokens (as rouge_score).

    A plain function because the synthetic-data filter uses it to drop near-duplicates.
    """
    tokens_a, tokens_b = _rouge_tokens(a), _rouge_tokens(b)
    if not tokens_a or not tokens_b:
        return 0.0
    lcs = _lcs_length(tokens_a, tokens_b)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(tokens_a), lcs / len(tokens_b)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, example: Mapping[str, Any]) -> float:
    """ROUGE-L F1: rewards the reference's words in the reference's order, gaps allowed."""
    return _best(rouge_l_f1, prediction, example, "rouge_l")


def bleu(prediction: str, example: Mapping[str, Any]) -> float:
    """sacrebleu sentence BLEU (default tokenizer and exp smoothing) / 100; all references at once."""
    import sacrebleu

    score = sacrebleu.sentence_bleu(prediction, _references(example, "bleu")).score
    return min(1.0, max(0.0, score / 100))  # a perfect match comes back as 100.00000000000004


def chrf(prediction: str, example: Mapping[str, Any]) -> float:
    """sacrebleu sentence chrF / 100: character n-grams, kinder than BLEU to morphology and short texts."""
    import sacrebleu

    return _best(
        lambda p, r: min(1.0, max(0.0, sacrebleu.sentence_chrf(p, [r]).score / 100)), prediction, example, "chrf"
    )


# ------------------------------------------------------------------------ format checks


def regex_match(prediction: str, example: Mapping[str, Any]) -> float:
    """1.0 when `pattern` is found in the prediction; with `fullmatch: true` it must cover the
    whole prediction, surrounding whitespace aside."""
    pattern = _require(example, "pattern", "regex_match")
    try:
        if example.get("fullmatch", False):
            return float(re.fullmatch(pattern, prediction.strip()) is not None)
        return float(re.search(pattern, prediction) is not None)
    except re.error as exc:
        raise ValueError(f"metric 'regex_match': pattern {pattern!r} is not a valid regex: {exc}") from exc


_FENCE = re.compile(r"^```(?:json)?[ \t]*\n?(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


def _parse_json(prediction: str) -> tuple[bool, Any]:
    """Models wrap JSON in markdown fences even when told not to; a surrounding fence is not an error."""
    text = prediction.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def json_valid(prediction: str, example: Mapping[str, Any]) -> float:
    """1.0 when the prediction (a surrounding ``` or ```json fence allowed) is JSON."""
    return float(_parse_json(prediction)[0])


def json_schema(prediction: str, example: Mapping[str, Any]) -> float:
    """1.0 when the prediction is JSON and validates against the example's `schema`.

    The validator follows the schema's `$schema` (Draft 2020-12 when absent). A schema that is
    itself invalid raises: that is a broken dataset, not a wrong answer.
    """
    import jsonschema
    from jsonschema.validators import validator_for

    schema = _require(example, "schema", "json_schema")
    validator_class = validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"metric 'json_schema': the example's schema is invalid: {exc.message}") from exc
    parsed, document = _parse_json(prediction)
    return float(parsed and validator_class(schema).is_valid(document))


# ------------------------------------------------------------------------------- registry

METRICS: dict[str, Metric] = {
    "exact_match": exact_match,
    "exact_match_normalized": exact_match_normalized,
    "contains_reference": contains_reference,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "bleu": bleu,
    "chrf": chrf,
    "regex_match": regex_match,
    "json_valid": json_valid,
    "json_schema": json_schema,
}


def load_metric(spec: str) -> Metric:
    """A built-in metric by name, or a custom one as "module:function" (imported, not exec'd)."""
    if spec in METRICS:
        return METRICS[spec]
    allowed = ", ".join(METRICS)
    if ":" not in spec:
        raise ConfigError(f"unknown metric {spec!r}; choose one of {allowed}, or give 'module:function' for your own")
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"custom metric {spec!r} must be written 'module:function', e.g. 'my_metrics:accuracy'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"custom metric {spec!r}: cannot import module {module_name!r} ({exc}); is it on PYTHONPATH?"
        ) from exc
    function = getattr(module, function_name, None)
    if function is None:
        raise ConfigError(f"custom metric {spec!r}: module {module_name!r} has no attribute {function_name!r}")
    if not callable(function):
        raise ConfigError(f"custom metric {spec!r}: {function_name!r} is not a function")
    return function


# ---------------------------------------------------------------------- multiple choice


def multiple_choice_scores(loglikelihoods: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, float]:
    """lm-evaluation-harness's acc and acc_norm for one question.

    acc_norm divides each choice's total loglikelihood by its length in characters, as lm-eval
    does (characters, not tokens, so the number does not depend on the tokenizer): a long
    answer is not penalised for having more tokens to pay for. Ties go to the first choice
    (numpy argmax, as lm-eval).
    """
    if len(loglikelihoods) != len(choices) or not choices:
        raise ValueError(f"got {len(loglikelihoods)} loglikelihoods for {len(choices)} choices")
    if not 0 <= gold < len(choices):
        raise ValueError(f"gold index {gold} is out of range for {len(choices)} choices")
    best = max(range(len(choices)), key=lambda i: (loglikelihoods[i], -i))
    # An empty choice has no characters to normalise by; count it as one so it cannot divide by zero.
    per_char = [ll / max(len(choice), 1) for ll, choice in zip(loglikelihoods, choices)]
    best_norm = max(range(len(choices)), key=lambda i: (per_char[i], -i))
    return {"acc": float(best == gold), "acc_norm": float(best_norm == gold)}


# ----------------------------------------------------------------------- classification


def _check_classification(predictions: Sequence[str], labels: Sequence[str], label_set: Sequence[str]) -> None:
    if len(predictions) != len(labels):
        raise ValueError(f"got {len(predictions)} predictions for {len(labels)} labels")
    unknown = sorted(set(labels) - set(label_set))
    if unknown:
        raise ValueError(f"gold labels {unknown} are not in the label set {list(label_set)}")


def _per_label(predictions: Sequence[str], labels: Sequence[str], label_set: Sequence[str]) -> dict[str, dict]:
    true_positive = Counter(gold for gold, predicted in zip(labels, predictions) if gold == predicted)
    predicted_count = Counter(predictions)
    gold_count = Counter(labels)
    rows = {}
    for label in label_set:
        tp, n_predicted, n_gold = true_positive[label], predicted_count[label], gold_count[label]
        precision = tp / n_predicted if n_predicted else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows[label] = {"precision": precision, "recall": recall, "f1": f1, "support": n_gold, "_predicted": n_predicted}
    return rows


def _macro(rows: Mapping[str, Mapping[str, float]]) -> float:
    present = [row["f1"] for row in rows.values() if row["support"] or row["_predicted"]]
    return sum(present) / len(present) if present else float("nan")


def macro_f1(predictions: Sequence[str], labels: Sequence[str], label_set: Sequence[str]) -> float:
    """Mean per-label F1 over the labels that occur (as gold or as prediction); see classification_summary."""
    _check_classification(predictions, labels, label_set)
    return _macro(_per_label(predictions, labels, label_set))


def classification_summary(
    predictions: Sequence[str], labels: Sequence[str], label_set: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label precision/recall/F1/support and the confusion matrix.

    Predictions are compared as given (map generations to labels first). A prediction outside
    `label_set` is wrong and counted in the confusion column "<other>". A gold label outside
    `label_set` is an error. Precision or recall with a zero denominator is 0.

    Macro-F1 leaves out a label that is neither gold nor predicted anywhere: it says nothing
    about the model, and a bootstrap resample that happens to miss a rare label would otherwise
    be dragged down by a 0 it did not earn. Such a label still appears in `per_label` (all 0,
    support 0). With no examples at all macro-F1 is NaN.
    """
    _check_classification(predictions, labels, label_set)
    rows = _per_label(predictions, labels, label_set)
    known = set(label_set)
    columns = [*label_set, OTHER_LABEL]
    confusion = {gold: dict.fromkeys(columns, 0) for gold in label_set}
    for gold, predicted in zip(labels, predictions):
        confusion[gold][predicted if predicted in known else OTHER_LABEL] += 1
    correct = sum(gold == predicted for gold, predicted in zip(labels, predictions))
    return {
        "accuracy": correct / len(labels) if labels else float("nan"),
        "macro_f1": _macro(rows),
        "per_label": {label: {k: v for k, v in row.items() if k != "_predicted"} for label, row in rows.items()},
        "confusion": confusion,
    }
