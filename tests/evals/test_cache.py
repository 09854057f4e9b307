"""honing.evals.cache: answers are stored per (model, task, example), reused, and keyed by content."""

from __future__ import annotations

from honing.evals.cache import AnswerCache, default_path, key_of


def test_answers_are_stored_and_reused_across_connections(tmp_path):
    path = tmp_path / "evals.sqlite"
    cache = AnswerCache(path)
    cache.put_many("m1", "t1", {"e1": {"answer": "yes", "new_tokens": 2}, "e2": {"logprobs": [-1.5, -0.25]}})
    cache.close()

    reopened = AnswerCache(path)
    found = reopened.get_many("m1", "t1", ["e1", "e2", "e3"])
    assert found == {"e1": {"answer": "yes", "new_tokens": 2}, "e2": {"logprobs": [-1.5, -0.25]}}
    reopened.close()


def test_a_changed_model_or_task_key_is_a_miss(tmp_path):
    cache = AnswerCache(tmp_path / "evals.sqlite")
    cache.put_many("m1", "t1", {"e1": {"answer": "a"}})
    assert cache.get_many("m2", "t1", ["e1"]) == {}
    assert cache.get_many("m1", "t2", ["e1"]) == {}
    assert cache.get_many("m1", "t1", ["e1"]) == {"e1": {"answer": "a"}}
    cache.close()


def test_put_replaces_an_answer(tmp_path):
    cache = AnswerCache(tmp_path / "evals.sqlite")
    cache.put_many("m", "t", {"e": {"answer": "old"}})
    cache.put_many("m", "t", {"e": {"answer": "new"}})
    assert cache.get_many("m", "t", ["e"]) == {"e": {"answer": "new"}}
    cache.close()


def test_more_examples_than_one_query_chunk(tmp_path):
    cache = AnswerCache(tmp_path / "evals.sqlite")
    values = {f"e{i}": i for i in range(1203)}
    cache.put_many("m", "t", values)
    assert cache.get_many("m", "t", list(values)) == values
    cache.close()


def test_disabled_cache_stores_nothing_and_creates_no_file(tmp_path):
    path = tmp_path / "sub" / "evals.sqlite"
    cache = AnswerCache(path, enabled=False)
    cache.put_many("m", "t", {"e": 1})
    assert cache.get_many("m", "t", ["e"]) == {}
    assert not path.parent.exists()


def test_key_of_is_order_independent_and_sensitive_to_values():
    assert key_of(a=1, b=[1, 2]) == key_of(b=[1, 2], a=1)
    assert key_of(a=1, b=[1, 2]) != key_of(a=1, b=[2, 1])
    assert key_of(a=1) != key_of(a=2)
    assert len(key_of(a=1)) == 32 and int(key_of(a=1), 16) >= 0


def test_default_path_follows_honing_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "c"))
    assert default_path() == tmp_path / "c" / "evals.sqlite"
    monkeypatch.delenv("HONING_CACHE")
    assert default_path().parts[-3:] == (".cache", "honing", "evals.sqlite")
