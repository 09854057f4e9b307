"""Whole-dataset commands: dedup across splits and against evaluation files, split, mix, stats, card, the CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter

import pytest
from click.testing import CliRunner

from honing.cli import cli
from honing.workbench import card, dedup, mix, split, stats
from tests.workbench.workbench_helpers import command, read_jsonl, sentence, write_jsonl


@pytest.fixture
def splits(tmp_path):
    rng = random.Random(1)
    train = [{"text": sentence(rng), "label": rng.choice("ab")} for _ in range(40)]
    train.append(dict(train[3]))  # line 41: exact duplicate of line 4
    words = train[5]["text"].split()
    train.append({"text": " ".join(words[:-1] + ["changed"]), "label": "a"})  # line 42: near duplicate of line 6
    test = [{"text": sentence(rng)} for _ in range(8)] + [{"text": train[7]["text"].upper() + "!"}]  # line 9: of train line 8
    evaluation = [{"text": train[9]["text"]}]
    return (write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "test.jsonl", test),
            write_jsonl(tmp_path / "eval.jsonl", evaluation))


def test_dedup_within_across_splits_and_against_eval(tmp_path, splits):
    train, test, evaluation = splits
    result = dedup.run(command("dedup", f"input.test={test}", f"input.train={train}", f"against=[{evaluation}]",
                               f"output={tmp_path}/out", f"run_dir={tmp_path}/run", "workers=2", "chunk_size=5"))
    counts = result["counts"]
    assert counts["removed_by"] == {"contamination": 1, "cross_split": 1, "exact": 1, "near": 1}
    removed = {(r["file"].rsplit("/", 1)[1], r["line"]): r for r in read_jsonl(tmp_path / "run/removed.jsonl")}
    assert removed[("train.jsonl", 41)]["duplicate_of"].endswith("train.jsonl:4")
    assert removed[("train.jsonl", 42)]["reason"] == "near" and removed[("train.jsonl", 42)]["similarity"] > 0.8
    assert removed[("test.jsonl", 9)]["reason"] == "cross_split" and removed[("test.jsonl", 9)]["duplicate_of_split"] == "train"
    assert removed[("train.jsonl", 10)]["reason"] == "contamination"
    assert len(read_jsonl(tmp_path / "out/train.jsonl")) == 42 - 3 and len(read_jsonl(tmp_path / "out/test.jsonl")) == 8
    assert counts["in"] == counts["kept"] + counts["removed"] == 51


def test_dedup_pool_equals_one_process(tmp_path, splits):
    train, _, _ = splits
    for workers in (1, 2):
        dedup.run(command("dedup", f"input={train}", f"output={tmp_path}/o{workers}.jsonl", f"run_dir={tmp_path}/r{workers}", f"workers={workers}", "chunk_size=4"))
    assert (tmp_path / "o1.jsonl").read_bytes() == (tmp_path / "o2.jsonl").read_bytes()
    assert (tmp_path / "r1/removed.jsonl").read_bytes() == (tmp_path / "r2/removed.jsonl").read_bytes()


def test_split_is_deterministic_and_stratified(tmp_path):
    rows = [{"text": f"record {i}", "label": "rare" if i % 10 == 0 else "common"} for i in range(200)]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    args = [f"input={src}", "stratify_by=label", "ratios={train: 0.8, validation: 0.1, test: 0.1}", "seed=3"]
    first = split.run(command("split", *args, f"output={tmp_path}/a", f"run_dir={tmp_path}/ra", "workers=2"))
    split.run(command("split", *args, f"output={tmp_path}/b", f"run_dir={tmp_path}/rb", "workers=1"))
    for name in ("train", "validation", "test"):
        assert (tmp_path / f"a/{name}.jsonl").read_bytes() == (tmp_path / f"b/{name}.jsonl").read_bytes()
    assert first["counts"]["splits"] == {"train": 160, "validation": 20, "test": 20}
    assert first["counts"]["strata"]["rare"] == {"train": 16, "validation": 2, "test": 2}
    everything = sum((read_jsonl(tmp_path / f"a/{n}.jsonl") for n in ("train", "validation", "test")), [])
    assert sorted(r["text"] for r in everything) == sorted(r["text"] for r in rows)
    other = split.run(command("split", *args[:-1], "seed=4", f"output={tmp_path}/c", f"run_dir={tmp_path}/rc"))
    assert other["counts"]["splits"] == first["counts"]["splits"]
    assert (tmp_path / "c/test.jsonl").read_bytes() != (tmp_path / "a/test.jsonl").read_bytes()


def test_mix_weights_counts_provenance_and_decontamination(tmp_path):
    rng = random.Random(2)
    a_rows = [{"text": sentence(rng, 12)} for i in range(300)]
    a = write_jsonl(tmp_path / "a.jsonl", a_rows)
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": sentence(rng, 12)} for i in range(50)])
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [a_rows[7]])
    result = mix.run(command("mix", f"sources.a={a}", f"sources.b={b}", "weights.a=0.75", "weights.b=0.25", "total=200",
                             f"against=[{evaluation}]", f"output={tmp_path}/mix.jsonl", f"run_dir={tmp_path}/run", "seed=5"))
    out = read_jsonl(tmp_path / "mix.jsonl")
    share = Counter(r["_source"] for r in out)
    assert len(out) == 200 and abs(share["a"] / 200 - 0.75) <= 0.01
    assert {**a_rows[7], "_source": "a"} not in out
    assert result["counts"]["removed_by"] == {"contamination": 1} and result["counts"]["sources"]["b"]["repeated"] == 0
    assert len(read_jsonl(tmp_path / "run/removed.jsonl")) == 1
    assert [r["_source"] for r in out[:20]] != sorted(r["_source"] for r in out[:20])  # interleaved
    counted = mix.run(command("mix", f"sources.a={a}", f"sources.b={b}", "counts.a=10", "counts.b=120", "add_source=false",
                              f"output={tmp_path}/m2.jsonl", f"run_dir={tmp_path}/run2"))
    assert counted["counts"]["sources"]["b"]["repeated"] == 70 and "_source" not in read_jsonl(tmp_path / "m2.jsonl")[0]


def test_stats_counts_duplicates_pii_and_field(tmp_path):
    rows = [{"text": "Hello world", "label": "x"}, {"text": "hello, WORLD!", "label": "y"}, {"text": "mail a@b.org", "label": "x"}]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    result = stats.run(command("stats", f"input={src}", "field=label", f"run_dir={tmp_path}/run", "workers=2"))["stats"]
    assert result["records"] == 3 and result["exact_duplicates"] == 1 and result["pii_found"] == {"email": 1}
    assert result["field"]["top"] == [["x", 2], ["y", 1]] or result["field"]["top"] == [("x", 2), ("y", 1)]
    assert sum(b["count"] for b in result["length_chars"]["bins"]) == 3
    assert json.loads((tmp_path / "run/stats.json").read_text())["duplicate_share"] == round(1 / 3, 4)


def test_card_lists_every_step_with_counts_from_the_runs(tmp_path, splits):
    train, test, evaluation = splits
    clean_out = tmp_path / "clean.jsonl"
    runs = [tmp_path / n for n in ("r_clean", "r_pii", "r_dedup", "r_split")]
    from honing.workbench import clean, pii

    clean.run(command("clean", f"input={train}", f"output={clean_out}", f"run_dir={runs[0]}", "clean.min_words=31"))
    pii.run(command("pii", f"input={train}", f"output={tmp_path}/pii.jsonl", f"run_dir={runs[1]}"))
    dedup.run(command("dedup", f"input={tmp_path}/pii.jsonl", f"output={tmp_path}/d.jsonl", f"run_dir={runs[2]}"))
    split.run(command("split", f"input={tmp_path}/d.jsonl", f"output={tmp_path}/sp", f"run_dir={runs[3]}"))
    card.run(command("card", f"runs=[{', '.join(map(str, runs))}]", f"output={tmp_path}/CARD.md"))
    text = (tmp_path / "CARD.md").read_text()
    for number, name in enumerate(("clean", "pii", "dedup", "split"), start=1):
        record = json.loads((runs[number - 1] / "run.json").read_text())
        assert f"### {number}. `honing data {name}` — run `{record['run_id']}`" in text
        assert f"removed: {record['counts']['removed']};" in text
        for reason, n in record["counts"]["removed_by"].items():
            assert f"| {reason} | {n} |" in text
    assert "| min_words |" in text and "| exact | 1 |" in text
    assert json.loads((runs[0] / "run.json").read_text())["inputs"][0]["sha256"] in text
    assert "## Splits" in text and "## Lengths" in text


def test_card_refuses_a_run_that_is_not_a_data_run(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/run.json").write_text(json.dumps({"stage": "sft", "status": "completed"}))
    result = CliRunner().invoke(cli, ["data", "card", f"runs=[{tmp_path}/r]", f"output={tmp_path}/c.md"], standalone_mode=False)
    assert "not a honing data command" in str(result.exception)


def test_cli_clean_and_dedup(tmp_path, splits):
    train, _, _ = splits
    honing = [sys.executable, "-m", "honing.cli"]
    out = subprocess.run([*honing, "data", "clean", f"input={train}", f"output={tmp_path}/c.jsonl", f"run_dir={tmp_path}/r1", "clean.min_words=31"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "r1/run.json").read_text())["counts"]["removed_by"] == {"min_words": 42}
    config = tmp_path / "dedup.yaml"
    config.write_text(f"input: {train}\noutput: {tmp_path}/d.jsonl\nrun_dir: {tmp_path}/r2\ndedup: {{threshold: 0.7}}\n")
    result = CliRunner().invoke(cli, ["data", "dedup", str(config), "workers=2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r2/run.json").read_text())["counts"]["removed_by"] == {"exact": 1, "near": 1}
    bad = subprocess.run([*honing, "data", "validate", f"input={tmp_path}/missing.jsonl"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "error:" in bad.stderr and "does not exist" in bad.stderr


def test_data_help_does_not_import_torch():
    code = (
        "import sys; from click.testing import CliRunner; from honing.cli import cli;"
        "r = CliRunner().invoke(cli, ['data', 'clean', '--help']); print(r.output);"
        "r2 = CliRunner().invoke(cli, ['data', '--help']); print(r2.output);"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "clean.min_chars: int | None = null" in out.stdout and "dedup" in out.stdout and "stats" in out.stdout


def test_card_lists_the_source_even_when_a_step_changed_nothing(tmp_path):
    from honing.workbench import card, clean

    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "a clean sentence with enough words"}])
    clean.run(command("clean", f"input={src}", f"output={tmp_path}/c.jsonl", f"run_dir={tmp_path}/r1"))
    card.run(command("card", f"runs=[{tmp_path}/r1]", f"output={tmp_path}/card.md"))
    sources = (tmp_path / "card.md").read_text().split("## Steps")[0]
    assert str(src) in sources  # the output has the input's hash, but the input is still where the data came from
