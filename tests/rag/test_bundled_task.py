"""The bundled knowledge task (issue #19): the Kestrelmark corpus and its QA set hold together.

Every gold source exists, every answer can be found in its gold sources, multi-hop questions name two
documents, the split is as the task's README states, and the corpus is the size the README states."""

from __future__ import annotations

import json
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest

DATA = Path(str(files("honing.rag") / "data"))
CORPUS = DATA / "corpus"
KINDS = {"lookup", "multi-hop", "version"}
# The range the README states; the corpus is written to be longer than one small model's context.
MIN_WORDS, MAX_WORDS = 40_000, 60_000
SUFFIXES = {".md", ".txt", ".html"}


def load_questions() -> list[dict]:
    lines = (DATA / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def questions() -> list[dict]:
    return load_questions()


def test_every_question_has_the_fields_and_a_known_kind(questions):
    for q in questions:
        assert set(q) == {"id", "question", "answer", "aliases", "sources", "kind", "split"}, q["id"]
        assert q["question"].strip() and q["answer"].strip(), q["id"]
        assert isinstance(q["aliases"], list) and q["sources"], q["id"]
        assert q["kind"] in KINDS, q["id"]


def test_ids_are_unique(questions):
    ids = [q["id"] for q in questions]
    assert len(ids) == len(set(ids))


def test_every_gold_source_exists(questions):
    for q in questions:
        for source in q["sources"]:
            assert not Path(source).is_absolute(), (q["id"], source)
            assert (CORPUS / source).is_file(), (q["id"], source)


def test_every_answer_or_alias_appears_in_a_gold_source(questions):
    for q in questions:
        texts = [(CORPUS / s).read_text(encoding="utf-8").lower() for s in q["sources"]]
        forms = [q["answer"], *q["aliases"]]
        assert any(form.lower() in text for form in forms for text in texts), (q["id"], q["answer"])


def test_multi_hop_questions_need_two_documents(questions):
    for q in questions:
        if q["kind"] == "multi-hop":
            assert len(set(q["sources"])) >= 2, q["id"]


def test_split_and_kinds_are_as_the_readme_states(questions):
    assert len(questions) == 120
    by_split_kind = Counter((q["split"], q["kind"]) for q in questions)
    assert by_split_kind == {
        ("train", "lookup"): 14, ("train", "multi-hop"): 3, ("train", "version"): 3,
        ("test", "lookup"): 65, ("test", "multi-hop"): 18, ("test", "version"): 17,
    }


def test_no_document_is_empty_and_every_kind_of_file_is_there():
    paths = corpus_files()
    assert 40 <= len(paths) <= 60
    assert {p.suffix for p in paths} == SUFFIXES
    for path in paths:
        assert len(path.read_text(encoding="utf-8").split()) >= 100, path


def test_corpus_word_count_is_in_the_stated_range():
    words = sum(len(p.read_text(encoding="utf-8").split()) for p in corpus_files())
    assert MIN_WORDS <= words <= MAX_WORDS, words


def test_every_document_is_packaged():
    # pyproject's package-data globs are one folder deep under corpus/: a deeper file would not ship.
    for path in corpus_files():
        assert len(path.relative_to(CORPUS).parts) == 2, path
