"""`honing label`: a scripted labelling session writes the right pairs (A/B drawn per item), logs ties
and skips without writing them as pairs, resumes where it stopped, undoes, and writes what `honing dpo` reads."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from honing.config import DPOConfig, LabelConfig, load_config
from honing.errors import ConfigError, DataError
from honing.stages.label import build_items, label

PROMPTS = ["What is 2 + 2?", "Name a colour.", "Say hello.", "Count to three.", "What is the capital of France?"]


def _files(tmp_path, prompts=PROMPTS):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    for side in ("first", "second"):
        rows = [{"prompt": p, "response": f"{side} answer to {p}"} for p in prompts]
        (tmp_path / f"{side}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _cfg(tmp_path, *extra):
    return load_config(LabelConfig, None, [
        f"prompts={tmp_path / 'prompts.jsonl'}", f"first.responses={tmp_path / 'first.jsonl'}", "first.name=model-1",
        f"second.responses={tmp_path / 'second.jsonl'}", "second.name=model-2", f"output={tmp_path / 'prefs.jsonl'}",
        "labeller=tester", "seed=3", *extra,
    ])


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _quiet():
    return Console(file=io.StringIO(), width=120)


def test_a_scripted_session_writes_pairs_with_the_swap_and_logs_every_decision(tmp_path):
    cfg = _cfg(_files(tmp_path))
    items = build_items(cfg)
    swapped = [item.shown_swapped(cfg.seed) for item in items]
    assert True in swapped and False in swapped  # the seed shows each source first for some items
    summary = label(cfg, keys=["a", "b", "t", "s", "a"], console=_quiet())
    assert summary["status"] == "completed" and summary["remaining"] == 0
    assert (summary["pairs"], summary["ties"], summary["skipped"]) == (3, 1, 1)

    names = ("model-1", "model-2")
    pairs = _lines(tmp_path / "prefs.jsonl")
    assert [p["item"] for p in pairs] == [items[0].key, items[1].key, items[4].key]
    for pair, index, pressed in zip(pairs, (0, 1, 4), "aba"):
        shown = (1, 0) if swapped[index] else (0, 1)  # which source is A, which is B
        winner = shown[0] if pressed == "a" else shown[1]
        assert pair["prompt"] == PROMPTS[index]
        assert pair["chosen"] == items[index].answers[winner] and pair["rejected"] == items[index].answers[1 - winner]
        assert pair["source_chosen"] == names[winner] and pair["source_rejected"] == names[1 - winner]
        assert pair["labeller"] == "tester" and pair["labelled_at"]
    decisions = _lines(tmp_path / "prefs.jsonl.decisions.jsonl")
    assert [d["decision"] for d in decisions] == ["a", "b", "tie", "skip", "a"]
    assert [d["shown_as_a"] == "model-2" for d in decisions] == swapped
    assert decisions[2]["preferred"] is None and decisions[0]["preferred"] == pairs[0]["source_chosen"]


def test_quitting_and_rerunning_resumes_at_the_first_unlabelled_item(tmp_path):
    cfg = _cfg(_files(tmp_path))
    first = label(cfg, keys=["a", "t", "q"], console=_quiet())
    assert first["status"] == "stopped" and first["remaining"] == 3
    screen = Console(file=io.StringIO(), width=120)
    second = label(cfg, keys=["b", "x", "s", "a"], console=screen)  # x: an unknown key is ignored
    shown = screen.file.getvalue()
    assert "item 3 of 5" in shown and "item 1 of 5" not in shown
    assert "unknown key" in shown
    assert second["status"] == "completed" and second["remaining"] == 0
    assert second["this_session"] == {"a": 1, "b": 1, "tie": 0, "skip": 1, "undone": 0}
    third = label(cfg, keys=["a", "a"], console=_quiet())  # nothing left: no key is read, nothing written
    assert third["this_session"]["a"] == 0
    items = [p["item"] for p in _lines(tmp_path / "prefs.jsonl")]
    assert len(items) == len(set(items)) == 3
    decided = [d["item"] for d in _lines(tmp_path / "prefs.jsonl.decisions.jsonl")]
    assert len(decided) == len(set(decided)) == 5


def test_end_of_input_and_ctrl_c_keep_what_was_decided(tmp_path):
    cfg = _cfg(_files(tmp_path))
    assert label(cfg, keys=["a"], console=_quiet())["status"] == "stopped"  # keys ran out: like q

    def interrupted():
        yield "b"
        raise KeyboardInterrupt

    summary = label(cfg, keys=interrupted(), console=_quiet())
    assert summary["status"] == "interrupted" and summary["pairs"] == 2 and summary["remaining"] == 3


def test_undo_takes_back_the_last_decision(tmp_path):
    cfg = _cfg(_files(tmp_path))
    summary = label(cfg, keys=["u", "a", "t", "u", "u", "b", "q"], console=_quiet())
    assert summary["this_session"]["undone"] == 2
    pairs = _lines(tmp_path / "prefs.jsonl")
    decisions = _lines(tmp_path / "prefs.jsonl.decisions.jsonl")
    assert len(pairs) == 1 and [d["decision"] for d in decisions] == ["b"]
    assert pairs[0]["item"] == decisions[0]["item"] == build_items(cfg)[0].key


def test_keys_from_a_pipe(tmp_path, monkeypatch):
    cfg = _cfg(_files(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("a\n\nB\nq\n"))
    summary = label(cfg, console=_quiet())
    assert summary["pairs"] == 2 and summary["status"] == "stopped"


def test_the_preference_file_is_what_dpo_reads(tmp_path, tokenizer):
    from honing.data.formats import normalize
    from honing.stages.dpo import load_pairs

    cfg = _cfg(_files(tmp_path), "system_prompt=Be brief.")
    label(cfg, keys=["a", "b", "a", "b", "a"], console=_quiet())
    records = _lines(tmp_path / "prefs.jsonl")
    assert normalize(records[0], "preference")["prompt"][0] == {"role": "system", "content": "Be brief."}
    dpo_cfg = load_config(DPOConfig, None, [f"data.train={tmp_path / 'prefs.jsonl'}", "data.validation_split=0"])
    data = load_pairs(dpo_cfg, tokenizer)
    assert len(data.train) == 5 and not data.rejects


def test_identical_answers_are_logged_not_shown(tmp_path):
    _files(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "first.jsonl").read_text().splitlines()]
    (tmp_path / "second.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + "".join(
        json.dumps({**r, "response": "different"}) + "\n" for r in rows[2:]))
    summary = label(_cfg(tmp_path), keys=["a", "a", "a"], console=_quiet())
    assert summary["identical"] == 2 and summary["pairs"] == 3 and summary["remaining"] == 0
    assert len(_lines(tmp_path / "prefs.jsonl")) == 3


def test_bad_inputs_name_file_and_line(tmp_path):
    _files(tmp_path)
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "ok"}) + "\n" + '{"prompt": "broken\n')
    with pytest.raises(DataError, match=r"prompts\.jsonl:2"):
        label(_cfg(tmp_path), keys=[], console=_quiet())
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"question": "no prompt"}) + "\n")
    with pytest.raises(DataError, match=r"prompts\.jsonl:2"):
        label(_cfg(tmp_path), keys=[], console=_quiet())
    _files(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "second.jsonl").read_text().splitlines()]
    rows[1], rows[2] = rows[2], rows[1]
    (tmp_path / "second.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"second\.jsonl:2: answers a different prompt"):
        label(_cfg(tmp_path), keys=[], console=_quiet())
    _files(tmp_path)
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "x"}\nnot json\n')
    with pytest.raises(DataError, match=r"prefs\.jsonl:2"):
        label(_cfg(tmp_path), keys=[], console=_quiet())


def test_prompts_can_come_from_the_responses_files(tmp_path):
    _files(tmp_path)
    cfg = load_config(LabelConfig, None, [f"first.responses={tmp_path / 'first.jsonl'}",
                                          f"second.responses={tmp_path / 'second.jsonl'}", f"output={tmp_path / 'p.jsonl'}"])
    items = build_items(cfg)
    assert [i.prompt for i in items] == PROMPTS
    label(cfg, keys=["a"], console=_quiet())
    pair = _lines(tmp_path / "p.jsonl")[0]
    assert {pair["source_chosen"], pair["source_rejected"]} == {str(tmp_path / "first.jsonl"), str(tmp_path / "second.jsonl")}


def test_config_checks():
    with pytest.raises(ConfigError, match="temperature"):
        load_config(LabelConfig, None, ["prompts=p.txt", "output=o.jsonl", "sampling.temperature=0"])
    with pytest.raises(ConfigError, match="prompts is required"):
        load_config(LabelConfig, None, ["output=o.jsonl", "first.responses=a.jsonl"])
    with pytest.raises(ConfigError, match=r"\.jsonl"):
        load_config(LabelConfig, None, ["prompts=p.txt", "output=o.json"])
    cfg = load_config(LabelConfig, None, ["prompts=p.txt", "output=o.jsonl"])  # one model, sampled twice
    assert cfg.sampling.temperature > 0


def test_one_model_sampled_twice_is_generated_once(tmp_path, tiny_model_dir, monkeypatch):
    (tmp_path / "prompts.txt").write_text("Hello\nWhat is two plus two?\n")
    overrides = [f"prompts={tmp_path / 'prompts.txt'}", f"output={tmp_path / 'prefs.jsonl'}", f"first.model.path={tiny_model_dir}",
                 f"second.model.path={tiny_model_dir}", "sampling.max_new_tokens=6", "sampling.temperature=1.0",
                 "sampling.top_p=1.0", "batch_size=2"]
    cfg = load_config(LabelConfig, None, overrides)
    items = build_items(cfg)
    assert all(item.answers[0] != item.answers[1] for item in items)  # seeds 0 and 1 sample differently
    assert (tmp_path / "prefs.jsonl.responses.json").is_file()

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached answers should be reused")

    monkeypatch.setattr("honing.generate.generate_answers", no_generation)
    assert build_items(cfg) == items
    label(cfg, keys=["a", "b"], console=_quiet())
    pairs = _lines(tmp_path / "prefs.jsonl")
    assert {p["source_chosen"] for p in pairs} <= {f"{tiny_model_dir}#seed0", f"{tiny_model_dir}#seed1"}
    with pytest.raises(AssertionError, match="cached"):  # other sampling settings: generated afresh
        build_items(load_config(LabelConfig, None, [*overrides, "sampling.seed=5"]))


def test_single_key_presses_from_a_terminal(monkeypatch):
    """On a terminal, keys arrive without Enter (cbreak mode); Ctrl-D ends; the terminal is restored."""
    pty = pytest.importorskip("pty")
    import os
    import threading
    import termios

    from honing.stages.label import terminal_keys

    master, slave = pty.openpty()
    with os.fdopen(slave, "r") as stdin:
        monkeypatch.setattr("sys.stdin", stdin)
        before = termios.tcgetattr(slave)
        threading.Timer(0.2, os.write, args=(master, b"at\x04")).start()  # typed once the keys are awaited
        assert list(terminal_keys()) == ["a", "t"]
        assert termios.tcgetattr(slave) == before
    os.close(master)
