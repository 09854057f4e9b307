"""`honing` as a user types it: positional files, overrides beside them, and mistakes that end in
one line and a non-zero exit with nothing half-written (never a traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import honing.runs
from honing.cli import main, split_args
from honing.config.stages import DATA_STAGES, STAGES
from honing.errors import EXIT_CRASH, EXIT_USAGE

GOOD = [{"instruction": f"Say {word}.", "output": f"{word.capitalize()}!"} for word in ("hello", "bye", "yes", "no")]


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys):
    """Run `honing ARGS` in-process in tmp_path; (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HONING_DEBUG", raising=False)
    monkeypatch.setattr(honing.runs, "_CURRENT_RUN", None)  # no run directory left over from another test

    def call(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["honing", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of an atomic write that was not committed."""
    return sorted(str(p) for p in folder.rglob(".*.tmp"))


# --------------------------------------------------------------------------- bad bytes


@pytest.fixture(params=["invalid_utf8", "binary"])
def bad_file(request, tmp_path) -> tuple[Path, int]:
    """A .jsonl that is not UTF-8 text, and the line of the first bad byte."""
    path = tmp_path / f"{request.param}.jsonl"
    if request.param == "invalid_utf8":
        path.write_bytes(json.dumps(GOOD[0]).encode() + b'\n{"instruction": "caf\xe9", "output": "x"}\n')
        return path, 2
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\xff\xfe\x00")
    return path, 1


def test_inspect_a_file_that_is_not_text_fails_in_one_line(run_cli, bad_file):
    path, line = bad_file
    code, out, err = run_cli("inspect", path.name)
    if path.name.startswith("invalid"):  # inspect lists bad records and goes on: it is how one finds them
        assert code == 0 and f"{path.name}:{line}: not UTF-8 text" in out + err
    else:
        assert code == EXIT_USAGE
        assert f"{path.name}:{line}: not UTF-8 text" in one_error_line(err)


@pytest.mark.parametrize("command", [["data", "validate"], ["data", "clean", "-o", "out/clean.jsonl"],
                                     ["data", "stats"], ["data", "dedup", "-o", "out/dedup.jsonl"]])
def test_data_commands_name_file_and_line_of_bytes_that_are_not_utf8(run_cli, bad_file, tmp_path, command):
    path, line = bad_file
    code, _, err = run_cli(*command[:2], path.name, *command[2:])
    assert code == EXIT_USAGE
    assert f"{path.name}:{line}: not UTF-8 text" in one_error_line(err)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_skip_turns_bytes_that_are_not_utf8_into_rejects(run_cli, bad_file, tmp_path):
    path, line = bad_file
    code, _, _ = run_cli("data", "clean", path.name, "-o", "clean.jsonl", "on_bad_record=skip", "run_dir=run")
    rejects = [json.loads(x) for x in (tmp_path / "run" / "rejects.jsonl").read_text().splitlines()]
    assert code == 0 and rejects[0]["line"] == line and "not UTF-8 text" in rejects[0]["reason"]


# --------------------------------------------------------------------------- a byte-order mark


def test_a_jsonl_with_a_bom_is_accepted(run_cli, tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in GOOD).encode())
    code, out, err = run_cli("inspect", "bom.jsonl")
    assert code == 0, err
    assert "instruction" in out
    code, _, err = run_cli("data", "validate", "bom.jsonl", "run_dir=v")
    assert code == 0, err
    assert json.loads((tmp_path / "v" / "run.json").read_text())["counts"]["valid"] == len(GOOD)
    code, _, err = run_cli("data", "clean", "bom.jsonl", "-o", "clean.jsonl", "run_dir=c")
    assert code == 0, err
    assert not (tmp_path / "clean.jsonl").read_bytes().startswith(b"\xef\xbb\xbf")


def test_a_config_with_a_bom_is_accepted(run_cli, tmp_path):
    write_jsonl(tmp_path / "data.jsonl", GOOD)
    (tmp_path / "validate.yaml").write_bytes(b"\xef\xbb\xbfinput: data.jsonl\nrun_dir: v\n")
    code, _, err = run_cli("data", "validate", "validate.yaml")
    assert code == 0, err and (tmp_path / "v" / "run.json").is_file()


# --------------------------------------------------------------------------- careless use


def test_output_dir_that_is_a_file(run_cli, tmp_path):
    write_jsonl(tmp_path / "data.jsonl", GOOD)
    (tmp_path / "taken").write_text("a file\n")
    code, _, err = run_cli("sft", "data.train=data.jsonl", "output.dir=taken")
    assert code == EXIT_USAGE and "output.dir: taken is a file" in one_error_line(err)
    code, _, err = run_cli("data", "validate", "data.jsonl", "run_dir=taken")
    assert code == EXIT_USAGE and "taken is a file, not a directory" in one_error_line(err)
    assert (tmp_path / "taken").read_text() == "a file\n"


@pytest.mark.parametrize("args, expected", [
    (["inspect", "missing.jsonl"], "missing.jsonl does not exist"),
    (["data", "clean", "missing.jsonl", "-o", "out.jsonl"], "missing.jsonl does not exist"),
    (["inspect", "empty.jsonl"], "empty.jsonl: the dataset is empty"),
    (["data", "validate", "empty.jsonl"], "empty.jsonl holds no records"),
    (["data", "clean", "empty.jsonl", "-o", "out.jsonl"], "empty.jsonl holds no records"),
    (["inspect", "folder"], "folder: the dataset is empty"),
    (["data", "clean", "folder", "-o", "out.jsonl"], "folder holds no records (no data files under it)"),
    (["data", "clean", "data.jsonl", "-o", "folder"], "cannot write folder: it is a directory"),
    (["data", "clean", "data.jsonl", "-o", "data.jsonl/out.jsonl"], "data.jsonl is a file, not a directory"),
    (["data", "validate", "list.yaml"], "list.yaml: the top level must be a mapping"),
    (["data", "validate", "folder.yaml"], "folder.yaml is a directory"),
    (["data", "validate", "broken.yaml"], "broken.yaml:2: not valid YAML"),
])
def test_careless_use_is_one_line_and_leaves_nothing(run_cli, tmp_path, args, expected):
    write_jsonl(tmp_path / "data.jsonl", GOOD)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "folder" / "notes.md").write_text("not data\n")
    (tmp_path / "list.yaml").write_text("- input: data.jsonl\n")
    (tmp_path / "broken.yaml").write_text("input: data.jsonl\n  run_dir: [\n")
    code, _, err = run_cli(*args)
    assert code == EXIT_USAGE
    assert expected in one_error_line(err)
    assert not (tmp_path / "out.jsonl").exists() and leftovers(tmp_path) == []
    assert (tmp_path / "data.jsonl").is_file()


def test_output_into_a_missing_directory_makes_it_and_a_failure_removes_it(run_cli, tmp_path):
    write_jsonl(tmp_path / "data.jsonl", GOOD)
    code, _, err = run_cli("data", "clean", "data.jsonl", "-o", "new/sub/clean.jsonl", "run_dir=r1")
    assert code == 0, err
    assert len((tmp_path / "new/sub/clean.jsonl").read_text().splitlines()) == len(GOOD)
    (tmp_path / "bad.jsonl").write_text(json.dumps(GOOD[0]) + "\n{oops\n")
    code, _, err = run_cli("data", "clean", "bad.jsonl", "-o", "other/sub/clean.jsonl", "run_dir=r2")
    assert code == EXIT_USAGE and "bad.jsonl:2: not valid JSON" in one_error_line(err)
    assert not (tmp_path / "other").exists()


# --------------------------------------------------------------------------- crashes


def test_an_unexpected_error_is_one_line_and_a_crash_file(run_cli, tmp_path, monkeypatch):
    import honing.workbench.validate as validate

    def broken(cfg):
        raise RuntimeError("something inside honing broke")

    monkeypatch.setattr(validate, "run", broken)
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    write_jsonl(tmp_path / "data.jsonl", GOOD)
    code, _, err = run_cli("data", "validate", "data.jsonl")
    assert code == EXIT_CRASH
    line = one_error_line(err)
    assert "unexpected RuntimeError: something inside honing broke" in line and "HONING_DEBUG=1" in line
    crash = Path(line.split("the traceback is in ")[1].split(" (HONING_DEBUG")[0])
    assert crash.is_file() and crash.parent == tmp_path / "cache" / "crashes"
    text = crash.read_text()
    assert "Traceback" in text and "RuntimeError: something inside honing broke" in text and "data validate" in text

    monkeypatch.setenv("HONING_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something inside honing broke"):
        run_cli("data", "validate", "data.jsonl")


def test_a_crash_inside_a_run_writes_the_crash_file_in_its_run_directory(run_cli, tmp_path, monkeypatch):
    import honing.workbench.validate as validate
    from honing.runs import Run

    def broken(cfg):
        Run.create("data-validate", cfg, "the_run")
        raise KeyError("oops")

    monkeypatch.setattr(validate, "run", broken)
    write_jsonl(tmp_path / "data.jsonl", GOOD)
    code, _, err = run_cli("data", "validate", "data.jsonl")
    assert code == EXIT_CRASH and "the_run/crash-" in one_error_line(err)
    assert len(list((tmp_path / "the_run").glob("crash-*.txt"))) == 1


def test_debug_keeps_usage_errors_one_line_through_the_real_command(tmp_path):
    """HONING_DEBUG=1 shows tracebacks of bugs only (above); a mistake of the user's stays one line."""
    write_jsonl(tmp_path / "data.jsonl", GOOD)
    env = {"PATH": "/usr/bin:/bin", "HONING_CACHE": str(tmp_path / "cache"), "HONING_DEBUG": "1"}
    proc = subprocess.run([sys.executable, "-m", "honing.cli", "data", "validate", "missing.jsonl"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr
    assert "missing.jsonl does not exist" in proc.stderr


# --------------------------------------------------------------------------- positional forms


def test_every_positional_form(run_cli, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", GOOD)
    write_jsonl(tmp_path / "b.jsonl", [{"text": "a plain document about apples and pears"}] * 3)
    for args, output in [
        (["data", "validate", "a.jsonl"], None),
        (["data", "stats", "a.jsonl"], None),
        (["data", "clean", "a.jsonl", "-o", "clean.jsonl"], "clean.jsonl"),
        (["data", "pii", "a.jsonl", "-o", "pii.jsonl"], "pii.jsonl"),
        (["data", "dedup", "a.jsonl", "-o", "dedup.jsonl"], "dedup.jsonl"),
        (["data", "convert", "a.jsonl", "-o", "chat.jsonl", "to=chat"], "chat.jsonl"),
        (["data", "split", "a.jsonl", "-o", "splits", "ratios.train=0.5", "ratios.test=0.5"], "splits/train.jsonl"),
        (["data", "mix", "a.jsonl", "b.jsonl", "-o", "mix.jsonl", "counts.a=2", "counts.b=1"], "mix.jsonl"),
    ]:
        code, _, err = run_cli(*args)
        assert code == 0, (args, err)
        assert output is None or (tmp_path / output).is_file(), args
    assert len((tmp_path / "mix.jsonl").read_text().splitlines()) == 3
    code, out, err = run_cli("inspect", "a.jsonl")
    assert code == 0 and "instruction" in out, err


@pytest.mark.parametrize("stage, args, expected", [
    (STAGES["generate"], ["prompts.txt", "model.path=m"], ["prompts=prompts.txt", "output=answers.jsonl", "model.path=m"]),
    (STAGES["merge"], ["runs/sft/adapter"], ["model.adapter=runs/sft/adapter", "output=answers.jsonl"]),
    (STAGES["inspect"], ["data.jsonl", "example=2"], ["data.train=data.jsonl", "example=2"]),
    (DATA_STAGES["mix"], ["web.jsonl", "books/web.jsonl"], ["sources.web=web.jsonl", "sources.web_2=books/web.jsonl",
                                                             "output=answers.jsonl"]),
])
def test_positional_files_become_their_keys(stage, args, expected):
    config, overrides = split_args(stage, tuple(args), "answers.jsonl" if stage.output else None)
    assert config is None and overrides == expected


def test_generate_and_merge_take_their_file_positionally(run_cli, tmp_path, monkeypatch):
    """The stage gets the positional file and -o in its config (the run itself is stubbed: no model here)."""
    import honing.stages.generate as generate
    import honing.stages.merge as merge

    seen = {}
    monkeypatch.setattr(generate, "run", lambda cfg: seen.setdefault("generate", (cfg.prompts, cfg.output)))
    monkeypatch.setattr(merge, "run", lambda cfg: seen.setdefault("merge", (cfg.model.adapter, cfg.output)))
    (tmp_path / "prompts.txt").write_text("Say hi.\n")
    assert run_cli("generate", "prompts.txt", "-o", "answers.jsonl")[0] == 0
    assert run_cli("merge", "adapter_dir", "-o", "merged")[0] == 0
    assert seen == {"generate": ("prompts.txt", "answers.jsonl"), "merge": ("adapter_dir", "merged")}


def test_overrides_work_beside_positional_files(run_cli, tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(GOOD[0]) + "\n[1, 2]\n")
    code, _, err = run_cli("data", "clean", "a.jsonl", "-o", "clean.jsonl", "on_bad_record=skip", "run_dir=run", "workers=1")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["counts"]["rejected"] == 1 and record["parameters"]["workers"] == 1


def test_a_config_file_and_positional_files_together(run_cli, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", GOOD)
    (tmp_path / "clean.yml").write_text("run_dir: from_config\non_bad_record: skip\n")
    code, _, err = run_cli("data", "clean", "clean.yml", "a.jsonl", "-o", "clean.jsonl")
    assert code == 0, err
    assert (tmp_path / "from_config" / "run.json").is_file() and (tmp_path / "clean.jsonl").is_file()


@pytest.mark.parametrize("args, expected", [
    (["inspect", "a.jsonl", "data.train=b.jsonl"], "data.train is given twice"),
    (["data", "clean", "a.jsonl", "-o", "x.jsonl", "output=y.jsonl"], "output is given twice"),
    (["data", "clean", "a.jsonl", "input=b.jsonl", "-o", "x.jsonl"], "input is given twice"),
    (["inspect", "a.jsonl", "b.jsonl"], "takes one file, got 2"),
    (["data", "validate", "one.yaml", "two.yml"], "two config files"),
])
def test_conflicting_arguments_are_one_line(run_cli, tmp_path, args, expected):
    write_jsonl(tmp_path / "a.jsonl", GOOD)
    code, _, err = run_cli(*args)
    assert code == EXIT_USAGE and expected in one_error_line(err)


@pytest.mark.parametrize("args", [["sft", "train.jsonl"], ["chat", "settings.cfg"], ["data", "card", "notes.txt"]])
def test_a_file_for_a_command_without_one_names_both_readings(run_cli, args):
    code, _, err = run_cli(*args)
    line = one_error_line(err)
    assert code == EXIT_USAGE
    assert "neither a config" in line and "nor a key=value override" in line and "takes no file argument" in line
    assert ".yaml" in line  # how to make it read as a config
