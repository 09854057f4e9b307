"""Cleaning: text fields of every format, normalisers, and each quality rule on a failing and a passing text."""

from __future__ import annotations

import copy
import pickle

import pytest
from pydantic import ValidationError

from honing.data.clean import (
    CleanConfig,
    Cleaner,
    clean_text,
    duplicate_ngram_char_fraction,
    record_text_fields,
    set_text_field,
    top_ngram_char_fraction,
)
from honing.errors import ConfigError

PARAGRAPH = (
    "The harbour town woke slowly under a pale winter sky. Fishermen checked their nets while "
    "bakers pulled the first loaves from stone ovens, and children hurried along the narrow lanes "
    "toward the school on the hill. By midmorning the market square filled with traders selling "
    "apples, wool, candles and smoked fish. Visitors often remarked that the place seemed "
    "unchanged for centuries, although the new ferry terminal had brought tourists every summer "
    "since the railway closed."
)


# --------------------------------------------------------------------------- text fields


def test_text_fields_of_every_format(data_records):
    for kind, records in data_records.items():
        for record in records:
            fields = record_text_fields(record)
            assert fields, kind
            for path, text in fields:
                value = record
                for step in path:
                    value = value[step]
                assert value == text
    chat = data_records["chat"][0]
    assert [path for path, _ in record_text_fields(chat)][2] == ("messages", 2, "content")
    sharegpt = data_records["sharegpt"][1]
    assert record_text_fields(sharegpt) == [(("conversations", 0, "value"), "Hello"), (("conversations", 1, "value"), "Hi!")]


def test_text_fields_skip_ids_roles_and_metadata_but_keep_unknown_strings():
    record = {
        "id": "r1",
        "source": "web",
        "meta": {"note": "internal"},
        "messages": [{"role": "user", "content": "Hi"}],
        "response": "Hello",
        "score": 3,
        "system": None,
    }
    assert record_text_fields(record) == [(("messages", 0, "content"), "Hi"), (("response",), "Hello")]


def test_set_text_field_writes_in_place():
    record = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    set_text_field(record, ("conversations", 1, "value"), "B")
    assert record["conversations"][1] == {"from": "gpt", "value": "B"}


# --------------------------------------------------------------------------- normalisers


def test_nfkc_folds_ligatures_and_full_width_digits():
    cfg = CleanConfig()
    assert clean_text("ﬁnd １２３", cfg) == "find 123"
    assert clean_text("ﬁnd", CleanConfig(normalize_unicode="NFC")) == "ﬁnd"
    assert clean_text("ﬁnd", CleanConfig(normalize_unicode=None)) == "ﬁnd"


def test_control_chars_removed_newlines_and_tabs_kept():
    cfg = CleanConfig(fix_whitespace=False)
    assert clean_text("a\tb\x00c\x07\u200b\nd\r\ne", cfg) == "a\tbc\nd\ne"


def test_whitespace_fixed_but_code_indentation_kept():
    cfg = CleanConfig()
    assert clean_text("  hello   world \t\n\n\n\nnext line   \n  ", cfg) == "hello world\n\nnext line"
    code = "    def f():\n        return  1\n"
    assert clean_text(code, cfg) == "    def f():\n        return 1"


def test_html_stripped_script_dropped_entities_unescaped():
    cfg = CleanConfig(strip_html=True)
    text = "<p>Fish &amp; chips</p><script>alert('x')</script><style>p {color: red}</style><!-- c -->Tasty<br>Cheap"
    assert clean_text(text, cfg) == "Fish & chips\nTasty\nCheap"
    assert clean_text("Tom &amp; Jerry", cfg) == "Tom & Jerry"
    assert clean_text("Tom &amp; Jerry", CleanConfig()) == "Tom &amp; Jerry"  # off by default


def test_chat_record_cleaned_across_all_messages_without_touching_the_input():
    record = {
        "messages": [
            {"role": "system", "content": "Be  brief."},
            {"role": "user", "content": "ﬁx   this\x00"},
            {"role": "assistant", "content": "Done.  "},
        ]
    }
    before = copy.deepcopy(record)
    result = Cleaner(CleanConfig()).clean(record)
    assert result.removed_by is None and result.changed
    assert result.record == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "fix this"},
            {"role": "assistant", "content": "Done."},
        ]
    }
    assert record == before


def test_clean_record_is_returned_unchanged():
    record = {"instruction": "Say hi.", "input": "", "output": "Hi!"}
    result = Cleaner(CleanConfig()).clean(record)
    assert result.record is record and result.removed_by is None and not result.changed


def test_record_that_becomes_empty_is_removed():
    cleaner = Cleaner(CleanConfig(strip_html=True))
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<b> </b>"}]}
    assert cleaner.clean(chat).removed_by == "empty"
    assert cleaner.clean({"text": " \x00 \n"}).removed_by == "empty"
    # An empty optional field (Alpaca input) is not a removal.
    assert cleaner.clean({"instruction": "Hi", "input": "", "output": "Hello"}).removed_by is None


# --------------------------------------------------------------------------- rules

RULES = [
    # (config, text that fails, text that passes, rule)
    (dict(min_chars=10), "short", "long enough text", "min_chars"),
    (dict(max_chars=10), "this is longer than ten", "short", "max_chars"),
    (dict(min_words=3), "two words", "three words here", "min_words"),
    (dict(max_words=3), "one two three four", "one two", "max_words"),
    (dict(mean_word_length=(3, 10)), "a b c d e f g", "the quick brown fox jumps", "gopher_mean_word_length"),
    (dict(mean_word_length=(3, 10)), "incomprehensibilities notwithstanding", "plain words", "gopher_mean_word_length"),
    (dict(max_symbol_ratio=0.1), "# tag # tag # here", "one # among ten words in this quite long sentence", "gopher_symbol_ratio"),
    (dict(max_symbol_ratio=0.1), "wait... what… really... no", "well... this is a normal sentence of eleven words or even more", "gopher_symbol_ratio"),
    (dict(max_bullet_line_fraction=0.9), "- apples\n• pears\n* plums", "Fruit:\n- apples", "gopher_bullet_lines"),
    (dict(max_ellipsis_line_fraction=0.3), "one...\ntwo…\nthree", "one...\ntwo\nthree\nfour", "gopher_ellipsis_lines"),
    (dict(min_alpha_word_fraction=0.8), "1 2 3 4 hello", "hello world 42 is fine today", "gopher_alpha_words"),
    (dict(drop_lorem_ipsum=True), "Lorem  Ipsum dolor sit amet", "A real sentence.", "c4_lorem_ipsum"),
    (dict(max_duplicate_line_fraction=0.3), "same line\nsame line\nsame line\nother", "a\nb\nc\nd", "gopher_duplicate_lines"),
    (
        dict(max_duplicate_line_char_fraction=0.2),
        "a long repeated line of text\na long repeated line of text\nshort",
        "a long line of text\nanother long line\nshort",
        "gopher_duplicate_line_chars",
    ),
    (
        dict(max_duplicate_paragraph_fraction=0.3),
        "first para\n\nfirst para\n\nsecond",
        "first para\n\nsecond para\n\nthird",
        "gopher_duplicate_paragraphs",
    ),
    (
        dict(max_duplicate_paragraph_char_fraction=0.2),
        "a long repeated paragraph\n\na long repeated paragraph\n\nend",
        "one paragraph\n\nanother paragraph\n\nend",
        "gopher_duplicate_paragraph_chars",
    ),
    (
        dict(max_top_ngram_char_fraction={2: 0.2}),
        "the cat the cat the cat sat on a mat today",
        "the cat sat on a mat and the dog lay on a rug",
        "gopher_top_2gram",
    ),
    (
        dict(max_duplicate_ngram_char_fraction={5: 0.15}),
        "one two three four five one two three four five six seven",
        "one two three four five six seven eight nine ten eleven twelve",
        "gopher_dup_5gram",
    ),
]


@pytest.mark.parametrize("overrides, bad, good, rule", RULES, ids=[f"{r[3]}-{i}" for i, r in enumerate(RULES)])
def test_rule_removes_failing_text_and_keeps_passing_text(overrides, bad, good, rule):
    cleaner = Cleaner(CleanConfig(**overrides))
    removed = cleaner.clean({"text": bad})
    assert (removed.record, removed.removed_by) == (None, rule)
    kept = cleaner.clean({"text": good})
    assert kept.removed_by is None and kept.record == {"text": good}


def test_rules_see_the_joined_text_of_all_fields():
    cleaner = Cleaner(CleanConfig(min_words=4))
    assert cleaner.clean({"instruction": "Add two", "input": "", "output": "numbers please"}).removed_by is None
    assert cleaner.clean({"instruction": "Add", "input": "", "output": "two"}).removed_by == "min_words"


def test_ngram_measures():
    words = "the cat the cat the cat sat".split()
    assert top_ngram_char_fraction(words, 2) == pytest.approx(18 / 21)
    assert top_ngram_char_fraction("a b c d".split(), 2) == 0.0  # nothing repeats
    assert duplicate_ngram_char_fraction("a b a b a b".split(), 2) == pytest.approx(4 / 6)


def test_gopher_document_preset_keeps_prose_and_names_the_rule():
    cleaner = Cleaner(CleanConfig.for_documents())
    assert cleaner.clean({"text": PARAGRAPH}).removed_by is None
    assert cleaner.clean({"text": "Too short."}).removed_by == "min_words"
    spam = " ".join(["buy cheap pills now"] * 20)
    assert cleaner.clean({"text": spam}).removed_by.startswith("gopher_")
    assert CleanConfig().min_words is None  # instruction data: no rule by default


def test_token_bounds_use_the_given_counter():
    def count_tokens(text: str) -> int:
        return len(text.split()) * 2

    cleaner = Cleaner(CleanConfig(min_tokens=6, max_tokens=10), count_tokens=count_tokens)
    assert cleaner.clean({"text": "two words"}).removed_by == "min_tokens"
    assert cleaner.clean({"text": "one two three four five six"}).removed_by == "max_tokens"
    assert cleaner.clean({"text": "three words here"}).removed_by is None


def test_token_bounds_without_counter_are_a_config_error():
    with pytest.raises(ConfigError, match="tokenizer"):
        Cleaner(CleanConfig(max_tokens=100))


def test_config_rejects_inverted_bounds_and_unknown_keys():
    with pytest.raises(ValidationError, match="min_chars"):
        CleanConfig(min_chars=10, max_chars=5)
    with pytest.raises(ValidationError):
        CleanConfig(max_top_ngram_char_fraction={2: 1.5})
    with pytest.raises(ValidationError):
        CleanConfig(strip_tags=True)


def test_every_field_is_documented():
    for name, info in CleanConfig.model_fields.items():
        assert info.description, name


def test_cleaner_pickles():
    cleaner = pickle.loads(pickle.dumps(Cleaner(CleanConfig.for_documents())))
    assert cleaner.clean({"text": PARAGRAPH}).removed_by is None
