"""`honing ladder`: a run on a tiny model produces every rung, each prompt is what its rung says, the fine-tune is
reused, and the recommendation follows the paired differences."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from honing.config.ladder import LadderConfig
from honing.errors import HoningError
from tests.conftest import write_jsonl

FACTS = [("What colour is the Zorbel lamp?", "teal"), ("How heavy is the Zorbel lamp?", "900 grams"),
         ("What does the Quint kettle cost?", "forty euros"), ("When was the Quint kettle launched?", "in 2019"),
         ("Which battery does the Zorbel lamp use?", "a ZB-7 cell"), ("How long is the Quint warranty?", "three years")]


@pytest.fixture()
def ladder_files(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "zorbel.md").write_text("# Zorbel lamp\n\nThe Zorbel lamp is teal. It weighs 900 grams and runs on a ZB-7 "
                                    "cell.\n", encoding="utf-8")
    (docs / "quint.md").write_text("# Quint kettle\n\nThe Quint kettle costs forty euros. It was launched in 2019 and "
                                   "has a three years warranty.\n", encoding="utf-8")
    system = {"role": "system", "content": "Answer in a few words."}
    test = write_jsonl(tmp_path / "test.jsonl", [{"id": f"q{i}", "messages": [system, {"role": "user", "content": q}],
                                                  "reference": a} for i, (q, a) in enumerate(FACTS[:4])])
    train = write_jsonl(tmp_path / "train.jsonl", [{"messages": [system, {"role": "user", "content": q},
                                                                 {"role": "assistant", "content": a}]}
                                                   for q, a in FACTS])
    return SimpleNamespace(docs=docs, test=test, train=train, tmp=tmp_path)


def _config(files, model_dir, **changes) -> LadderConfig:
    values = {
        "model": {"path": str(model_dir)},
        "task": {"name": "facts", "data": str(files.test), "metrics": ["contains_reference", "token_f1"],
                 "max_new_tokens": 4},
        "train": str(files.train),
        "few_shot": {"k": 2},
        "rag": {"docs": [str(files.docs)], "index": str(files.tmp / "index"), "k": 1, "candidates": 2},
        "finetune": {"dir": str(files.tmp / "tuned"), "max_length": 64,
                     "train": {"max_steps": 2, "micro_batch_size": 2, "eval_every": None, "save_every": None}},
        "cache": False, "resamples": 200,
        "output": {"dir": str(files.tmp / "ladder"), "tensorboard": False},
    }
    values.update(changes)
    return LadderConfig.model_validate(values)


def test_a_ladder_on_a_tiny_model_produces_every_rung(ladder_files, tiny_model_dir):
    from honing.stages.ladder import ladder

    result = ladder(_config(ladder_files, tiny_model_dir))
    run_dir = ladder_files.tmp / "ladder"
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["rungs"]) == ["zero_shot", "few_shot", "rag", "finetune", "finetune_rag"]
    assert result["recommendation"]["rung"] in results["rungs"]
    for rung, row in results["rungs"].items():
        assert row["quality"]["n"] == 4 and 0.0 <= row["quality"]["mean"] <= 1.0, rung
        assert row["computed"] == 4, rung
        assert row["cost"]["prompt_tokens"] > 0 and row["cost"]["seconds_per_answer"] > 0, rung
    best = results["best"]
    assert results["rungs"][best]["vs_best"]["mean"] == 0.0
    # Each rung's prompt is longer than zero-shot's by what it adds: examples, passages, both.
    tokens = {rung: row["cost"]["prompt_tokens"] for rung, row in results["rungs"].items()}
    assert tokens["few_shot"] > tokens["zero_shot"] and tokens["rag"] > tokens["zero_shot"]
    assert tokens["finetune"] == tokens["zero_shot"] and tokens["finetune_rag"] == tokens["rag"]
    assert results["rungs"]["finetune"]["cost"]["training_minutes"] > 0
    assert results["rungs"]["finetune"]["cost"]["training_reused"] is False
    assert results["rungs"]["finetune"]["cost"]["training_truncated"] == 0  # read from the fine-tune's run record
    assert "groundedness_overlap" in results["rungs"]["rag"] and "groundedness_overlap" not in results["rungs"]["few_shot"]
    answers = [json.loads(line) for line in (run_dir / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 20
    rag_sources = [a["sources"] for a in answers if a["rung"] == "rag"]
    assert [s[0].split("#")[0] for s in rag_sources] == ["zorbel.md", "zorbel.md", "quint.md", "quint.md"]
    report = (run_dir / "report.md").read_text()
    for label in ("zero-shot", "few-shot", "RAG", "fine-tuned", "fine-tuned + RAG", "Recommendation"):
        assert label in report
    html = (run_dir / "report.html").read_text()
    assert html.count("<svg") == 3
    record = json.loads((run_dir / "run.json").read_text())
    roles = {i["role"] for i in record["inputs"]}
    assert {"task", "train", "rag_index", "adapter"} <= roles and record["status"] == "completed"


def test_the_fine_tune_is_reused_and_the_prompts_are_what_each_rung_says(ladder_files, tiny_model_dir):
    from honing.stages.ladder import ShotPicker, _prepare_finetune, read_shots, rung_prompts

    cfg = _config(ladder_files, tiny_model_dir, rungs=["finetune"])
    first = _prepare_finetune(cfg)
    again = _prepare_finetune(cfg)
    assert not first.reused and again.reused and again.adapter == first.adapter
    assert again.minutes == pytest.approx(first.minutes)

    from honing.evals.tasks import load_examples

    examples = load_examples(cfg.task)
    picker = ShotPicker(read_shots(str(ladder_files.train)), None)
    prompts, _, _ = rung_prompts("few_shot", examples, cfg, picker, None)
    first_prompt = prompts[0]
    assert first_prompt[0]["role"] == "system" and first_prompt[-1]["content"] == FACTS[0][0]
    shots = [m["content"] for m in first_prompt[1:-1:2]]
    assert len(shots) == 2 and FACTS[0][0] not in shots  # the question itself is never its own example
    assert all("Zorbel" in s for s in shots)  # the nearest training questions are about the same product


def test_the_recommendation_is_the_earliest_rung_not_significantly_worse():
    from honing.evals.ladder import score_ladder
    from honing.evals.tasks import Example
    from honing.stages.ladder import RungAnswers

    n = 40
    examples = [Example(str(i), f"t:{i}", {"reference": "yes"}, prompt="q") for i in range(n)]

    def rows(right: int) -> list[dict]:
        return [{"answer": "yes" if i < right else "no", "prompt_tokens": 10, "new_tokens": 1, "seconds": 0.1,
                 "prompt": [{"role": "user", "content": "q"}], "context": [], "sources": []} for i in range(n)]

    cfg = LadderConfig.model_validate({"task": {"name": "t", "data": "t.jsonl", "metrics": ["exact_match"]},
                                       "train": "train.jsonl", "rungs": ["zero_shot", "few_shot", "rag"],
                                       "rag": {"index": "index"}, "resamples": 500})
    # zero-shot far behind; few-shot 1 example behind RAG (not significant); RAG best.
    answers = {"zero_shot": RungAnswers("zero_shot", rows(5)), "few_shot": RungAnswers("few_shot", rows(35)),
               "rag": RungAnswers("rag", rows(36))}
    results = score_ladder(cfg, examples, answers, None)
    assert results["best"] == "rag"
    assert results["rungs"]["zero_shot"]["significantly_worse"]
    assert not results["rungs"]["few_shot"]["significantly_worse"]
    assert results["recommendation"]["rung"] == "few_shot"
    assert results["rungs"]["few_shot"]["vs_best"]["mean"] == pytest.approx(-1 / n)


def test_bad_ladder_configs_say_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="need train"):
        LadderConfig.model_validate({"task": {"name": "t", "data": "x.jsonl"}, "rungs": ["few_shot"]})
    with pytest.raises(ValueError, match="need rag"):
        LadderConfig.model_validate({"task": {"name": "t", "data": "x.jsonl"}, "rungs": ["rag"]})
    with pytest.raises(ValueError, match="task.kind must be generation"):
        LadderConfig.model_validate({"task": {"name": "t", "data": "x.jsonl", "kind": "perplexity"},
                                     "rungs": ["zero_shot"]})
    from honing.stages.ladder import _prepare_index

    cfg = LadderConfig.model_validate({"task": {"name": "t", "data": "x.jsonl"}, "rungs": ["rag"],
                                       "rag": {"index": str(tmp_path / "none")}})
    with pytest.raises(HoningError, match="is not an index"):
        _prepare_index(cfg)


def test_the_bundled_ladder_files_are_what_make_ladder_data_writes():
    from honing.rag.make_ladder_data import DATA, records, render

    for name, rows in records().items():
        assert (DATA / name).read_text(encoding="utf-8") == render(rows), "run python -m honing.rag.make_ladder_data"
    assert len(records()["kestrelmark_test.jsonl"]) == 100 and len(records()["kestrelmark_train.jsonl"]) == 20


def test_a_finetune_dir_of_other_settings_or_an_unfinished_run_is_not_reused(ladder_files, tiny_model_dir):
    from honing.stages.ladder import _prepare_finetune, finetune_key

    cfg = _config(ladder_files, tiny_model_dir, rungs=["finetune"])
    tuned = ladder_files.tmp / "tuned"
    tuned.mkdir()
    (tuned / "run.json").write_text(json.dumps({"status": "completed"}))
    (tuned / "ladder.json").write_text(json.dumps({"key": "trained-with-something-else"}))
    with pytest.raises(HoningError, match="other settings, training data or base model"):
        _prepare_finetune(cfg)
    (tuned / "ladder.json").write_text(json.dumps({"key": finetune_key(cfg)}))
    (tuned / "run.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(HoningError, match="is failed"):
        _prepare_finetune(cfg)
    (tuned / "run.json").write_text("{not json")
    with pytest.raises(HoningError, match="is unreadable"):
        _prepare_finetune(cfg)
    changed = _config(ladder_files, tiny_model_dir, rungs=["finetune"],
                      finetune={"dir": str(tuned), "train": {"lr": 5e-4}})
    assert finetune_key(changed) != finetune_key(cfg)


def test_significance_needs_the_exact_test_for_a_0_1_metric():
    from honing.evals.ladder import mcnemar_p

    best = [1.0] * 100
    five_wins = [0.0] * 5 + [1.0] * 95
    assert mcnemar_p(five_wins, best) == pytest.approx(2 / 2 ** 5)  # 0.0625: not significant at 95 %
    assert mcnemar_p([0.0] * 10 + [1.0] * 90, best) < 0.01
    assert mcnemar_p(best, best) == 1.0
    assert mcnemar_p([0.5] * 100, best) is None  # not a 0/1 metric: the bootstrap decides alone


def test_five_losses_in_a_hundred_are_not_called_significant():
    from honing.evals.ladder import score_ladder
    from honing.evals.tasks import Example
    from honing.stages.ladder import RungAnswers

    examples = [Example(str(i), f"t:{i}", {"reference": "yes"}, prompt="q") for i in range(100)]

    def rows(wrong: int) -> list[dict]:
        return [{"answer": "no" if i < wrong else "yes", "prompt_tokens": 10, "new_tokens": 1, "seconds": 0.1,
                 "context": [], "sources": []} for i in range(100)]

    cfg = LadderConfig.model_validate({"task": {"name": "t", "data": "t.jsonl", "metrics": ["exact_match"]},
                                       "train": "train.jsonl", "rungs": ["zero_shot", "few_shot"], "resamples": 500})
    results = score_ladder(cfg, examples, {"zero_shot": RungAnswers("zero_shot", rows(5)),
                                           "few_shot": RungAnswers("few_shot", rows(0))}, None)
    zero = results["rungs"]["zero_shot"]
    assert zero["vs_best"]["high"] < 0  # the bootstrap interval alone excludes zero ...
    assert not zero["significantly_worse"] and results["recommendation"]["rung"] == "zero_shot"  # ... McNemar does not


def test_partial_finetune_settings_keep_the_ladder_defaults_and_the_base_model_must_be_plain():
    cfg = LadderConfig.model_validate({"task": {"name": "t", "data": "t.jsonl"}, "train": "x.jsonl",
                                       "rungs": ["finetune"],
                                       "finetune": {"train": {"epochs": 3}, "adapter": {"rank": 8}}})
    assert (cfg.finetune.train.epochs, cfg.finetune.train.lr, cfg.finetune.train.micro_batch_size) == (3, 1e-3, 8)
    assert (cfg.finetune.adapter.rank, cfg.finetune.adapter.alpha, cfg.finetune.adapter.dropout) == (8, 32, 0.0)
    with pytest.raises(ValueError, match="plain base"):
        LadderConfig.model_validate({"task": {"name": "t", "data": "t.jsonl"}, "rungs": ["zero_shot"],
                                     "model": {"adapter": "some/adapter"}})


def test_held_out_questions_in_the_training_data_are_counted(ladder_files, tiny_model_dir, tmp_path):
    from honing.errors import DataError
    from honing.evals.tasks import load_examples
    from honing.stages.ladder import finetune_dir, overlap, read_shots

    cfg = _config(ladder_files, tiny_model_dir)
    # The fixture's four held-out questions are among its six training ones (case and spacing aside).
    assert overlap(load_examples(cfg.task), read_shots(str(ladder_files.train))) == ["q0", "q1", "q2", "q3"]
    missing = _config(ladder_files, tiny_model_dir, train=str(tmp_path / "gone.jsonl"), finetune={})
    with pytest.raises(DataError, match="does not exist"):
        finetune_dir(missing)


def test_scores_outside_0_1_read_as_numbers_not_percentages():
    from honing.evals.ladder import difference_text, interval_text

    assert interval_text({"mean": 7.5, "low": 6.0, "high": 9.0}, False) == "7.5 [6, 9]"
    assert difference_text({"mean": -2.5, "low": -4.0, "high": -1.0}, False) == "-2.5 [-4, -1]"
    assert difference_text({"mean": -0.025, "low": -0.04, "high": -0.01}, True) == "-2.5 [-4.0, -1.0]"


def test_an_interrupted_rung_keeps_the_groups_it_answered(tmp_path, monkeypatch):
    from honing.evals.cache import AnswerCache
    from honing.models.chat import Completion
    from honing.stages import ladder as stage

    monkeypatch.setattr(stage, "ANSWER_GROUP", 1)
    cfg = LadderConfig.model_validate({"task": {"name": "t", "data": "t.jsonl"}, "rungs": ["zero_shot"],
                                       "batch_size": 2})
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]

    class Chat:
        def __init__(self, fail_after: int | None = None):
            self.asked, self.fail_after = [], fail_after

        def complete(self, batch, sampling):
            if self.fail_after is not None and len(self.asked) >= self.fail_after:
                raise KeyboardInterrupt
            self.asked += [p[0]["content"] for p in batch]
            return [Completion(f"answer to {p[0]['content']}", prompt_tokens=3, completion_tokens=2) for p in batch]

    cache = AnswerCache(tmp_path / "answers.sqlite")
    with pytest.raises(KeyboardInterrupt):
        stage.answer(Chat(fail_after=4), "weights", "zero_shot", prompts, cfg, cache)  # two groups of two, then ^C
    again = Chat()
    rows, computed = stage.answer(again, "weights", "zero_shot", prompts, cfg, cache)
    assert again.asked == ["question 4", "question 5"] and computed == 2
    assert [r["answer"] for r in rows] == [f"answer to question {i}" for i in range(6)]
    cache.close()


def test_a_fine_tune_with_context_trains_on_the_retrieved_chunks(ladder_files, tiny_model_dir):
    from honing.stages.ladder import _prepare_index, finetune_dir, with_context_records

    cfg = _config(ladder_files, tiny_model_dir, rungs=["finetune_rag"],
                  finetune={"with_context": True, "dir": None})
    _prepare_index(cfg)
    records = with_context_records(cfg)
    assert len(records) == len(FACTS)
    for record, (question, answer) in zip(records, FACTS):
        system, user, assistant = record["messages"]
        assert system["role"] == "system" and assistant == {"role": "assistant", "content": answer}
        assert "Context:" in user["content"] and user["content"].endswith(f"Question: {question}")
        product = "zorbel.md#" if "Zorbel" in question else "quint.md#"
        assert f"[{product}" in user["content"]  # the question's own document was retrieved into its turn
    plain = _config(ladder_files, tiny_model_dir, rungs=["finetune_rag"], finetune={"dir": None})
    assert finetune_dir(cfg) != finetune_dir(plain)  # another fine-tune, never reused for the plain one
    with pytest.raises(ValueError, match="needs rag"):
        LadderConfig.model_validate({"task": {"name": "t", "data": "t.jsonl"}, "train": "x.jsonl",
                                     "rungs": ["finetune"], "finetune": {"with_context": True}})
