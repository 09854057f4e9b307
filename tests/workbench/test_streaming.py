"""The streaming commands end to end: counts balance, pools match one process, outputs are atomic."""

from __future__ import annotations

import json
import random

import pytest

from honing.errors import DataError
from honing.workbench import clean, convert, pii, validate
from tests.workbench.workbench_helpers import command, read_jsonl, sentence, write_jsonl


def _mixed(tmp_path, n=40):
    rng = random.Random(0)
    rows = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            rows.append({"text": sentence(rng), "id": i})
        elif kind == 1:
            rows.append({"text": "short", "id": i})
        elif kind == 2:
            rows.append({"instruction": "mail   me", "input": "", "output": f"write to user{i}@example.com now", "id": i})
        else:
            rows.append({"text": "  spaced\u200b   out  " + sentence(rng, 5), "id": i})
    return write_jsonl(tmp_path / "in.jsonl", rows)


def test_clean_counts_balance_and_match_removed_file(tmp_path):
    src = _mixed(tmp_path)
    result = clean.run(command("clean", f"input={src}", f"output={tmp_path}/out.jsonl", f"run_dir={tmp_path}/run", "clean.min_chars=20", "workers=2", "chunk_size=3"))
    counts = result["counts"]
    assert counts["in"] == 40 == counts["kept"] + counts["removed"] + counts["rejected"]
    removed = read_jsonl(tmp_path / "run/removed.jsonl")
    assert len(removed) == counts["removed"] == counts["removed_by"]["min_chars"] == 10
    assert {r["line"] for r in removed} == {i + 1 for i in range(40) if i % 4 == 1}
    out = read_jsonl(tmp_path / "out.jsonl")
    assert len(out) == counts["kept"] and "\u200b" not in json.dumps(out) and "   " not in json.dumps(out)
    run = json.loads((tmp_path / "run/run.json").read_text())
    assert run["status"] == "completed" and run["counts"] == counts
    assert run["inputs"][0]["sha256"] and run["outputs"]["output"]["sha256"] and run["outputs"]["output"]["records"] == counts["kept"]
    assert run["parameters"]["clean"]["min_chars"] == 20


@pytest.mark.parametrize("name, overrides", [
    ("clean", ["clean.min_chars=20"]),
    ("pii", []),
    ("convert", ["to=chat", "on_bad_record=skip"]),
])
def test_pool_output_equals_one_process_byte_for_byte(tmp_path, name, overrides):
    src = _mixed(tmp_path, 60)
    module = {"clean": clean, "pii": pii, "convert": convert}[name]
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}.jsonl"
        module.run(command(name, f"input={src}", f"output={out}", f"run_dir={tmp_path}/run{workers}", f"workers={workers}", "chunk_size=7", *overrides))
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0]


def test_failure_mid_run_leaves_no_output_and_names_file_line(tmp_path):
    rows = [{"text": "one two three"}, {"text": "four five six"}, "{not json", {"text": "seven"}]
    src = write_jsonl(tmp_path / "bad.jsonl", rows * 50)  # the first bad record is on line 3
    out = tmp_path / "out" / "clean.jsonl"
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        clean.run(command("clean", f"input={src}", f"output={out}", f"run_dir={tmp_path}/run", "workers=2", "chunk_size=2"))
    assert not out.exists() and not out.parent.exists()  # the directory made for the output is removed too
    assert not (tmp_path / "run/removed.jsonl").exists()
    assert json.loads((tmp_path / "run/run.json").read_text())["status"] == "failed"


def test_skip_writes_rejects_with_file_line(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a b c"}, "[1, 2]", "{oops"])
    result = clean.run(command("clean", f"input={src}", f"output={tmp_path}/o.jsonl", f"run_dir={tmp_path}/run", "on_bad_record=skip", "workers=1"))
    rejects = read_jsonl(tmp_path / "run/rejects.jsonl")
    assert [(r["file"], r["line"]) for r in rejects] == [(str(src), 2), (str(src), 3)]
    assert result["counts"]["rejected"] == 2 and result["counts"]["kept"] == 1


def test_pii_redact_drop_report(tmp_path):
    rows = [{"text": "mail bob@example.com or call +44 20 7946 0958"}, {"text": "nothing here"}, {"text": "card 4111 1111 1111 1111"}]
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    redacted = pii.run(command("pii", f"input={src}", f"output={tmp_path}/r.jsonl", f"run_dir={tmp_path}/r1", "workers=2"))
    assert redacted["counts"]["found"] == {"credit_card": 1, "email": 1, "phone": 1}
    assert read_jsonl(tmp_path / "r.jsonl")[0]["text"] == "mail <EMAIL> or call <PHONE>"
    dropped = pii.run(command("pii", f"input={src}", f"output={tmp_path}/d.jsonl", f"run_dir={tmp_path}/r2", "pii.action=drop"))
    assert dropped["counts"]["removed_by"] == {"pii": 2} and read_jsonl(tmp_path / "d.jsonl") == [rows[1]]
    assert [r["line"] for r in read_jsonl(tmp_path / "r2/removed.jsonl")] == [1, 3]
    report = pii.run(command("pii", f"input={src}", f"run_dir={tmp_path}/r3", "pii.action=report"))
    findings = read_jsonl(tmp_path / "r3/findings.jsonl")
    assert sorted(f["type"] for f in findings) == ["credit_card", "email", "phone"]
    assert "bob@example.com" not in (tmp_path / "r3/findings.jsonl").read_text()
    assert report["counts"]["kept"] == 3 and "output" not in report["outputs"]


def test_convert_round_trip_alpaca_chat_alpaca(tmp_path):
    rows = [
        {"instruction": "Name a colour", "input": "", "output": "Blue", "id": 1},
        {"instruction": "Translate", "input": "", "output": "Bonjour", "system": "Be brief.", "id": 2},
    ]
    src = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    convert.run(command("convert", f"input={src}", f"output={tmp_path}/chat.jsonl", "to=chat", f"run_dir={tmp_path}/c1"))
    chat = read_jsonl(tmp_path / "chat.jsonl")
    assert chat[0] == {"messages": [{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue"}], "id": 1}
    convert.run(command("convert", f"input={tmp_path}/chat.jsonl", f"output={tmp_path}/sg.jsonl", "to=sharegpt", f"run_dir={tmp_path}/c2"))
    assert read_jsonl(tmp_path / "sg.jsonl")[1]["conversations"][0] == {"from": "system", "value": "Be brief."}
    convert.run(command("convert", f"input={tmp_path}/sg.jsonl", f"output={tmp_path}/back.jsonl", "to=instruction", f"run_dir={tmp_path}/c3"))
    assert read_jsonl(tmp_path / "back.jsonl") == rows


def test_convert_rejects_what_has_no_faithful_form(tmp_path):
    multi = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    src = write_jsonl(tmp_path / "c.jsonl", [{"instruction": "x", "output": "y"}, multi])
    with pytest.raises(DataError, match=r"c\.jsonl:2: Alpaca holds one exchange"):
        convert.run(command("convert", f"input={src}", f"output={tmp_path}/o.jsonl", "to=instruction", f"run_dir={tmp_path}/r1"))
    assert not (tmp_path / "o.jsonl").exists()
    result = convert.run(command("convert", f"input={src}", f"output={tmp_path}/o.jsonl", "to=instruction", "on_bad_record=skip", f"run_dir={tmp_path}/r2"))
    assert result["counts"] == {"in": 2, "kept": 1, "removed": 0, "rejected": 1, "removed_by": {}}
    assert read_jsonl(tmp_path / "r2/rejects.jsonl")[0]["line"] == 2
    pref = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    convert.run(command("convert", f"input={pref}", f"output={tmp_path}/p2.jsonl", "to=preference", f"run_dir={tmp_path}/r3"))
    assert read_jsonl(tmp_path / "p2.jsonl") == [{"prompt": "q", "chosen": "good", "rejected": "bad"}]


def test_validate_counts_formats_and_fails_on_invalid(tmp_path):
    src = write_jsonl(tmp_path / "v.jsonl", [{"text": "a"}, {"text": ""}, "nope", {"text": "b"}])
    with pytest.raises(DataError, match=r"2 of 4 records are invalid; the first: .*v\.jsonl:2"):
        validate.run(command("validate", f"input={src}", f"run_dir={tmp_path}/r1", "workers=2"))
    result = validate.run(command("validate", f"input={src}", f"run_dir={tmp_path}/r2", "on_bad_record=skip"))
    assert result["counts"] == {"in": 4, "valid": 2, "invalid": 2, "formats": {"text": 2}}
    assert [e["where"].rsplit(":", 1)[1] for e in result["errors"]] == ["2", "3"]


def test_token_bounds_and_token_histogram_with_a_tokenizer(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    from honing.workbench import stats

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [{"text": "one two"}, {"text": "one two three four five six seven eight nine ten eleven twelve"}]
    lengths = [len(tok(r["text"], add_special_tokens=False)["input_ids"]) for r in rows]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    limit = lengths[0] + 1  # the first fits, the second does not
    result = clean.run(command("clean", f"input={src}", f"output={tmp_path}/out.jsonl", f"run_dir={tmp_path}/run",
                               f"tokenizer={tokenizer_dir}", f"clean.max_tokens={limit}", "workers=2", "chunk_size=1"))
    assert result["counts"]["removed_by"] == {"max_tokens": 1}
    assert read_jsonl(tmp_path / "out.jsonl") == [rows[0]]
    summary = stats.run(command("stats", f"input={src}", f"run_dir={tmp_path}/stats", f"tokenizer={tokenizer_dir}"))
    histogram = summary.get("length_tokens") or summary["stats"]["length_tokens"]
    assert histogram["unit"] == "tokens"
    assert sum(b["count"] for b in histogram["bins"]) == 2
    assert (histogram["min"], histogram["max"]) == (min(lengths), max(lengths))
