"""The bundled probe library, and probe files with mistakes: errors name the file and line."""

from __future__ import annotations

from collections import Counter

import pytest

from honing.errors import DataError
from honing.redteam.probes import CATEGORIES, OVER_REFUSAL, builtin_files, load_probes, read_probe_file, select


def test_the_bundled_library_covers_every_category_with_a_heldout_share():
    probes = load_probes(builtin_files())
    counts = Counter(p.category for p in probes)
    assert set(counts) == set(CATEGORIES) and 60 <= len(probes) <= 120
    assert all(n >= 10 for n in counts.values())
    assert len({p.id for p in probes}) == len(probes)
    for category in CATEGORIES:  # every category has held-out probes, reported apart
        splits = Counter(p.split for p in probes if p.category == category)
        assert set(splits) == {"train", "heldout"} and splits["heldout"] >= 2, category
    assert all(p.messages[-1]["role"] == "user" and p.detectors for p in probes)
    assert not any(p.mutable for p in probes if p.category == OVER_REFUSAL)


def write(tmp_path, text, name="probes.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, line, message", [
    ("category: bias\nprobes:\n  - id: a\n    prompt: hi\n    detectors: [{type: choice, options: [x, y]}]\n"
     "  - id: b\n    promt: typo\n", 6, "promt: unknown key"),
    ("category: bias\nprobes:\n  - id: a\n    prompt: hi\n", 3, "has no default detectors"),
    ("probes:\n  - id: a\n    category: jailbreak\n    prompt: hi\n    messages: [{role: user, content: hi}]\n", 2,
     "either prompt"),
    ("probes:\n  - id: a\n    category: x\n    prompt: hi\n    detectors: [{type: regex, pattern: '(unclosed'}]\n", 2,
     "not a valid regular expression"),
    ("probes:\n  - id: a\n    category: x\n    prompt: hi\n    detectors: [{type: glob}]\n", 2, "detectors.0"),
    ("probes:\n  - id: a\n    category: secret_leak\n    prompt: hi\n    detectors: [{type: secret}]\n", 2,
     "needs the secret"),
    ("probes:\n  - id: a\n    category: x\n    messages: [{role: user, content: hi}, {role: assistant, content: ok}]\n"
     "    detectors: [{type: complied}]\n", 2, "must end with a user turn"),
])
def test_bad_probes_are_reported_with_file_and_line(tmp_path, body, line, message):
    path = write(tmp_path, body)
    with pytest.raises(DataError) as err:
        read_probe_file(path)
    assert f"{path}:{line}:" in str(err.value) and message in str(err.value)


def test_yaml_syntax_errors_and_unknown_top_level_keys(tmp_path):
    path = write(tmp_path, "probes:\n  - id: a\n    prompt: [unclosed\n")
    with pytest.raises(DataError, match=rf"{path}:\d+: not valid YAML"):
        read_probe_file(path)
    path = write(tmp_path, "category: bias\nsplitt: train\nprobes: []\n")
    with pytest.raises(DataError, match="unknown top-level key"):
        read_probe_file(path)


def test_jsonl_probe_files_report_the_line(tmp_path):
    path = write(tmp_path, '{"id": "a", "category": "jailbreak", "prompt": "hi"}\n\n'
                           '{"id": "b", "category": "jailbreak"}\n', "probes.jsonl")
    with pytest.raises(DataError, match=rf"{path}:3: probe 'b' give either prompt"):
        read_probe_file(path)


def test_an_id_used_twice_names_both_places(tmp_path):
    first = write(tmp_path, "category: jailbreak\nprobes:\n  - {id: a, prompt: hi}\n", "one.yaml")
    second = write(tmp_path, "category: jailbreak\nprobes:\n  - {id: b, prompt: hi}\n  - {id: a, prompt: ho}\n", "two.yaml")
    with pytest.raises(DataError, match=rf"{second}:4: probe id 'a' is already used at {first}:3"):
        load_probes([first, second])


def test_file_defaults_apply_and_probes_override_them(tmp_path):
    path = write(tmp_path, "category: jailbreak\nsplit: heldout\nmutable: false\nprobes:\n"
                           "  - {id: a, prompt: hi}\n  - {id: b, prompt: ho, split: train, system: Be brief.}\n")
    a, b = read_probe_file(path)
    assert (a.split, a.mutable, b.split) == ("heldout", False, "train")
    assert b.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ho"}]
    assert [type(d).__name__ for d in a.detectors] == ["CompliedSpec"]  # the category's default


def test_select_by_category_split_and_limit():
    probes = load_probes(builtin_files())
    chosen = select(probes, categories=["bias", "jailbreak"], splits=["train"], limit=3)
    assert Counter(p.category for p in chosen) == {"bias": 3, "jailbreak": 3}
    assert all(p.split == "train" for p in chosen)
    with pytest.raises(DataError, match="categories nope: no probe has them"):
        select(probes, categories=["nope"])
