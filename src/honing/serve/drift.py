"""Drift of the served prompts from the prompts a model was trained on.

    training_files   a version's training data, found through its records: a registry version (NAME@V) or a
                     path inside a run directory -> that run's run.json -> its data_train / data_prompts inputs,
                     then the parent run's, and so on back (an adapter's SFT run before its DPO run); every file
                     that is gone, changed since training or unreadable is named, never skipped silently
    prompt texts     served: the user turns of a chat request, or a completion's prompt; training: the user
                     turns of chat and preference records (read with honing's data loaders), or the text itself
    length           prompt length in words (whitespace-separated), served vs training: a two-sample
                     Kolmogorov–Smirnov statistic with its asymptotic p-value, and the population stability index
                     over the training lengths' deciles
    topic            word unigrams and bigrams (lower-cased; function words and PII placeholders such as <EMAIL>
                     left out): Jensen–Shannon divergence of the two distributions (bits, 0 = same, 1 = disjoint)
                     beside a noise floor (the same divergence between two random parts of the training prompts),
                     and the n-grams most over-represented in served traffic. N-grams, not embeddings: no model is
                     loaded and every number can be checked by hand.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from honing.errors import HoningError

TRAINING_ROLES = ("data_train", "data_prompts")
"""The run-record input roles that hold what a model was trained on."""
REGISTERED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*@\d+")
"""How the server names a registry-served version in the log: NAME@V."""
MAX_PARENTS = 20
PSI_BINS = 10
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]*>")
STOPWORDS = frozenset("""a an the and or but if then of to in on at by for with from as is are was were be been being
it its this that these those i me my you your he she his her we our they them their what which who whom how
where when why
do does did can could would should will shall may might must not no so than too very just about into over
there here am has have had having s t""".split())


# --------------------------------------------------------------------------- where the training data is


def training_files(version: str, registry_path: str | Path | None) -> dict[str, Any]:
    """{"files": [{path, role, run, stage, changed}], "trail": [how they were found], "missing": [what is gone]}."""
    from honing.registry.run_index import enclosing_run_dir, read_run

    found: dict[str, Any] = {"files": [], "trail": [], "missing": []}
    if REGISTERED.fullmatch(version):
        run = _registered_run(version, registry_path, found)
    else:
        directory = enclosing_run_dir(Path(version).expanduser().resolve())
        if directory is None:
            found["missing"].append(f"{version} is not a registered version (NAME@V) and not inside a honing run "
                                    "directory, so no record names its training data; give training_data: [files]")
            return found
        run = read_run(directory)
        found["trail"].append(f"{version} lies in the run {directory}")
    seen: set[Path] = set()
    while run is not None and run.dir not in seen and len(seen) < MAX_PARENTS:
        seen.add(run.dir)
        _run_inputs(run, found)
        parent = run.record.get("parent") if isinstance(run.record.get("parent"), dict) else None
        run = None
        if parent and parent.get("dir"):
            directory = Path(parent["dir"])
            if (directory / "run.json").is_file():
                run = read_run(directory)
                found["trail"].append(f"its parent run {directory} ({run.record.get('stage')})")
            else:
                found["missing"].append(f"the parent run {directory} (no run.json there any more)")
    return found


def _registered_run(version: str, registry_path: str | Path | None, found: dict[str, Any]):
    from honing.registry.run_index import RunRecord, read_run, working_dir
    from honing.registry.store import Registry, default_path

    path = Path(registry_path) if registry_path else default_path()
    if not path.is_file():
        found["missing"].append(f"no registry at {path}, where {version}'s run record would be found; set registry= or "
                                "HONING_REGISTRY, or give training_data: [files]")
        return None
    name, _, number = version.partition("@")
    try:
        with Registry(path, create=False) as registry:
            registered = registry.get(name, int(number))
    except HoningError as err:
        found["missing"].append(f"{version} in the registry {path}: {err}")
        return None
    directory = Path(registered.run_dir)
    if (directory / "run.json").is_file():
        found["trail"].append(f"registry {path}: {version} → run {directory}")
        return read_run(directory)
    found["trail"].append(f"registry {path}: {version} → run {directory} (gone: read from the registry's copy of "
                          "its run.json)")
    return RunRecord(directory, registered.record, working_dir(directory, registered.record), from_registry=True)


def _run_inputs(run, found: dict[str, Any]) -> None:
    from honing.data.cache import path_sha256

    stage = run.record.get("stage")
    for entry in run.inputs():
        if entry.get("role") not in TRAINING_ROLES:
            continue
        path = run.resolve(entry["path"])
        where = f"{entry['role']} of the {stage} run {run.dir}"
        if not path.exists():
            found["missing"].append(f"the training data {path} ({where}) is gone")
            continue
        recorded = entry.get("sha256")
        changed = bool(recorded) and path_sha256(path) != recorded
        found["files"].append({"path": str(path), "role": entry["role"], "run": str(run.dir), "stage": stage,
                               "changed": changed})


# --------------------------------------------------------------------------- prompt texts


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict)
                         and isinstance(part.get("text"), str))
    return ""


def user_text(messages: Any) -> str:
    """The user turns of a conversation, one per line."""
    if not isinstance(messages, list):
        return ""
    return "\n".join(content_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user")


def served_prompt(request: dict[str, Any] | None, *, grounded: bool = False) -> str | None:
    """What the client asked: the user turns of a chat request, or a completion's prompt; None without text. A
    `grounded` request (a model with rag:) was logged as the model saw it: its question turn holds the retrieved
    chunks, so only the question after the chunks counts."""
    if not isinstance(request, dict):
        return None
    if "messages" in request:
        messages = request["messages"]
        if grounded and isinstance(messages, list):
            messages = [{**m, "content": asked_question(content_text(m.get("content")))}
                        if isinstance(m, dict) and m.get("role") == "user" else m for m in messages]
        return user_text(messages) or None
    prompt = request.get("prompt")
    if isinstance(prompt, list):
        prompt = "\n".join(p for p in prompt if isinstance(p, str))
    if grounded and isinstance(prompt, str):
        prompt = asked_question(prompt)
    return prompt if isinstance(prompt, str) and prompt else None


def asked_question(text: str) -> str:
    """The question of a turn that rag_prompt built (instruction, context, then "Question: ..."), else the text."""
    from honing.rag.ask import QUESTION_MARK

    head, mark, question = text.rpartition(QUESTION_MARK)
    return question if mark and "Context:" in head else text


def training_prompts(files: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(prompt texts, notes) of the training files, read with honing's loaders (bad records skipped and counted)."""
    from honing.data.loading import load_dataset_file

    prompts, notes = [], []
    for entry in files:
        try:
            records, fmt, rejects = load_dataset_file(entry["path"], on_bad_record="skip")
        except HoningError as err:
            notes.append(f"{entry['path']} could not be read: {err}")
            continue
        texts = [t for t in (_record_prompt(r, fmt) for r in records) if t]
        prompts += texts
        notes.append(f"{entry['path']}: {len(texts)} prompts ({fmt} format)"
                     + (f", {len(rejects)} unreadable records skipped" if rejects else "")
                     + (" — changed since the run read it (sha256 differs)" if entry.get("changed") else ""))
    return prompts, notes


def _record_prompt(record: dict[str, Any], fmt: str) -> str:
    if fmt == "text":
        return record["text"]
    if fmt == "preference":
        return user_text(record["prompt"])
    return user_text(record["messages"])


# --------------------------------------------------------------------------- statistics


def words(text: str) -> int:
    return len(text.split())


def ks_two_sample(a: list[float], b: list[float]) -> tuple[float, float]:
    """(D, p): the largest gap between the two empirical distribution functions, and its asymptotic p-value
    (Kolmogorov's distribution with Stephens' small-sample correction)."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    gap = 0.0
    while i < len(a) and j < len(b):
        value = min(a[i], b[j])
        while i < len(a) and a[i] == value:
            i += 1
        while j < len(b) and b[j] == value:
            j += 1
        gap = max(gap, abs(i / len(a) - j / len(b)))
    effective = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    lam = (effective + 0.12 + 0.11 / effective) * gap
    if lam < 1e-3:
        return gap, 1.0
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return gap, min(1.0, max(0.0, p))


def decile_edges(values: list[float], bins: int = PSI_BINS) -> list[float]:
    """Inner bin edges at the quantiles of `values` (repeated edges merged)."""
    ordered = sorted(values)
    edges = [ordered[min(len(ordered) - 1, int(len(ordered) * k / bins))] for k in range(1, bins)]
    return sorted(set(edges))


def shares(values: list[float], edges: list[float]) -> list[float]:
    """The share of `values` in each bin: (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    import bisect

    counts = [0] * (len(edges) + 1)
    for value in values:
        counts[bisect.bisect_right(edges, value)] += 1
    return [c / len(values) for c in counts]


def psi(expected: list[float], actual: list[float], floor: float = 1e-4) -> float:
    """Population stability index Σ (a − e)·ln(a / e) over bins (empty bins floored at `floor`). Read it as
    < 0.1 stable, 0.1–0.25 a moderate shift, > 0.25 a large one."""
    total = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, floor), max(a, floor)
        total += (a - e) * math.log(a / e)
    return total


def ngrams(text: str) -> list[str]:
    """Lower-cased word unigrams and bigrams, without function-word-only ones and PII placeholders."""
    tokens = WORD.findall(PLACEHOLDER.sub(" ", text).lower())
    grams = [t for t in tokens if t not in STOPWORDS]
    grams += [f"{x} {y}" for x, y in zip(tokens, tokens[1:]) if not (x in STOPWORDS and y in STOPWORDS)]
    return grams


def ngram_counts(texts: list[str]) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(ngrams(text))
    return counts


def js_divergence(p: Counter, q: Counter) -> float | None:
    """Jensen–Shannon divergence (base 2) of two count tables; None when one is empty."""
    total_p, total_q = sum(p.values()), sum(q.values())
    if not total_p or not total_q:
        return None
    value = 0.0
    for key in set(p) | set(q):
        a, b = p.get(key, 0) / total_p, q.get(key, 0) / total_q
        m = (a + b) / 2
        value += (a * math.log2(a / m) if a else 0.0) + (b * math.log2(b / m) if b else 0.0)
    return max(0.0, value / 2)


def noise_floor(training: list[str], served_n: int, seed: int = 0) -> float | None:
    """The divergence between a random part of the training prompts (served_n of them, at most half) and the
    rest: what sampling alone gives, so a served divergence near it is no evidence of drift."""
    if len(training) < 4:
        return None
    shuffled = training[:]
    random.Random(seed).shuffle(shuffled)
    size = max(1, min(served_n, len(shuffled) // 2))
    return js_divergence(ngram_counts(shuffled[:size]), ngram_counts(shuffled[size:]))


def over_represented(served: Counter, training: Counter, top: int, min_count: int) -> list[dict[str, Any]]:
    """The n-grams whose served share most exceeds their training share (add-one smoothed ratio), each seen at
    least `min_count` times in served prompts."""
    total_s, total_t = sum(served.values()), sum(training.values())
    vocabulary = len(set(served) | set(training)) or 1
    rows = []
    for gram, count in served.items():
        if count < min_count:
            continue
        share_s = count / total_s
        share_t = training.get(gram, 0) / total_t if total_t else 0.0
        lift = ((count + 1) / (total_s + vocabulary)) / ((training.get(gram, 0) + 1) / (total_t + vocabulary))
        if lift > 1:
            rows.append({"ngram": gram, "served": count, "training": training.get(gram, 0), "served_share": share_s,
                         "training_share": share_t, "lift": lift})
    rows.sort(key=lambda r: (-r["lift"], -r["served"], r["ngram"]))
    return rows[:top]


def _summary(lengths: list[float]) -> dict[str, Any]:
    from honing.serve.monitor import percentiles

    return {**percentiles(lengths, (50, 95)), "mean": sum(lengths) / len(lengths) if lengths else None}


def compare(served: list[str], training: list[str], *, top: int, min_count: int) -> dict[str, Any]:
    """Length and topic drift of served prompts against training prompts (both non-empty)."""
    served_lengths = [float(words(t)) for t in served]
    training_lengths = [float(words(t)) for t in training]
    edges = decile_edges(training_lengths)
    expected, actual = shares(training_lengths, edges), shares(served_lengths, edges)
    statistic, p_value = ks_two_sample(served_lengths, training_lengths)
    served_counts, training_counts = ngram_counts(served), ngram_counts(training)
    return {
        "length_unit": "words (whitespace-separated)",
        "length": {"served": _summary(served_lengths), "training": _summary(training_lengths),
                   "ks": {"statistic": statistic, "p_value": p_value}, "psi": psi(expected, actual),
                   "bins": [{"from": low, "to": high, "training": e, "served": a}
                            for low, high, e, a in zip([None, *edges], [*edges, None], expected, actual)]},
        "topic": {"method": "word unigrams + bigrams (function words and PII placeholders left out)",
                  "js_divergence": js_divergence(served_counts, training_counts),
                  "noise_floor": noise_floor(training, len(served)),
                  "served_ngrams": sum(served_counts.values()), "training_ngrams": sum(training_counts.values()),
                  "over_represented": over_represented(served_counts, training_counts, top, min_count)},
    }


def drift_of(version: str, rows: list[dict[str, Any]], *, training_data: list[str], registry: str | None,
             top: int, min_count: int) -> dict[str, Any]:
    """The drift section of one version: where its training data was found (or what is missing) and, when both
    sides have prompts, the comparison."""
    if training_data:
        sources = {"files": [{"path": str(Path(p)), "role": "training_data", "run": None, "stage": None,
                              "changed": False} for p in training_data if Path(p).exists()],
                   "trail": ["training_data given in the config (the lineage is not looked up)"],
                   "missing": [f"the training data {p} (given in training_data) does not exist"
                               for p in training_data if not Path(p).exists()]}
    else:
        sources = training_files(version, registry)
    served = [t for t in (served_prompt(r.get("request"), grounded=bool(r.get("sources")))
                          for r in rows if r["status"] == 200) if t]
    training, notes = training_prompts(sources["files"])
    out: dict[str, Any] = {**sources, "notes": notes, "served_prompts": len(served), "training_prompts": len(training)}
    if not served:
        out["unavailable"] = "no served prompt text in the log (log.store_text=false, or no answered request)"
    elif not training:
        out["unavailable"] = ("no training prompts: " + (sources["missing"] or notes or
                                                        ["no record names a training data file"])[0])
    else:
        out.update(compare(served, training, top=top, min_count=min_count))
    return out
