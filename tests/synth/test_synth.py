"""synth: self-instruct filters and their counts, provenance, resume after an interruption
(hard and Ctrl-C), distillation in both formats, atomic output, config validation, an HTTP
teacher, and one run with a real (tiny, random) local teacher."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from honing.config import load_config
from honing.errors import ConfigError, DataError, HoningError
from honing.evals.metrics import rouge_l_f1
from honing.runs import file_sha256
from honing.synth import SynthConfig, run
from honing.synth.selfinstruct import NearDuplicates, parse_instance, parse_instruction

SEEDS = Path(__file__).resolve().parents[2] / "examples" / "data" / "synth_seeds.jsonl"
NEAR_SEED = "Give three tips for staying focused while studying at home."  # ROUGE-L 0.875 with a seed

# Position in the batch → the kind of reply the scripted teacher gives (batch_size 8).
KINDS = ["good", "good", "near_seed", "empty", "image", "no_marker", "bad_instance", "short"]


def _words(key: str, n: int = 7) -> str:
    """n made-up words that no other key shares (so good instructions never near-duplicate)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return " ".join(f"q{digest[4 * i:4 * i + 4]}" for i in range(n))


class ScriptedTeacher:
    """Replies decided by the prompt text, the batch seed and the position in the batch."""

    identity = {"kind": "scripted", "name": "test-teacher"}

    def __init__(self, interrupt_on_call: int | None = None, sigint_on_call: int | None = None):
        self.calls = 0
        self.interrupt_on_call = interrupt_on_call
        self.sigint_on_call = sigint_on_call
        self.seen: list[str] = []

    def texts(self, conversations, *, seed=None):
        self.calls += 1
        if self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        if self.calls == self.sigint_on_call:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C: the batch must still finish
        replies = []
        for position, messages in enumerate(conversations):
            user = messages[-1]["content"]
            self.seen.append(user)
            if user.startswith("Task: "):  # the instance prompt
                instruction = user.split("\n", 1)[0][len("Task: "):]
                replies.append("I cannot follow formats." if "badinstance" in instruction
                               else f"Input: <noinput>\nOutput: The answer to: {instruction}")
            elif "example tasks" in user:  # the instruction prompt
                replies.append(self._instruction(KINDS[position % len(KINDS)], f"{seed}:{position}:{user}"))
            else:  # distillation: echo the prompt
                replies.append(f"Answer to [{user}]")
        return replies

    @staticmethod
    def _instruction(kind: str, key: str) -> str:
        return {
            "good": f"Instruction: Explain {_words(key)}.",
            "near_seed": f"Instruction: {NEAR_SEED}",
            "empty": "",
            "image": f"Instruction: Describe the image of {_words(key)}.",
            "no_marker": "Sure! Here is something you could ask a model to do.",
            "bad_instance": f"Instruction: Summarise badinstance {_words(key)}.",
            "short": "Instruction: Hi",
        }[kind]


class ScriptedJudge:
    identity = {"kind": "scripted", "name": "test-judge"}

    def texts(self, conversations):
        replies = []
        for messages in conversations:
            user = messages[-1]["content"]
            question = user.split("Question:\n", 1)[1].split("\n\nAnswer:", 1)[0]
            # the two good tasks of a round differ only in their made-up words: grade by the first one's parity
            replies.append("Score: 9" if int(question.split()[1][1:], 16) % 2 == 0 else "Score: 2")
        return replies


def _config(tmp_path: Path, **overrides) -> SynthConfig:
    values = {"method": "self_instruct", "seeds": str(SEEDS), "output": str(tmp_path / "out" / "synth.jsonl"),
              "run_dir": str(tmp_path / "run"), "num_instructions": 5, "max_rounds": 10, "batch_size": 8, "seed": 3}
    values.update(overrides)
    return SynthConfig(**values)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _seed_instructions() -> list[str]:
    return [json.loads(line)["instruction"] for line in SEEDS.read_text().splitlines()]


# ----------------------------------------------------------------------- self-instruct


def test_self_instruct_filters_and_counts(tmp_path):
    cfg = _config(tmp_path)
    summary = run(cfg, teacher=ScriptedTeacher())
    # 2 kept per round of 8: round 0 and 1 keep 2 each, round 2 keeps 1 and sets 1 aside
    assert summary["status"] == "completed" and summary["kept"] == 5 and summary["records"] == 5
    assert summary["dropped"] == {"duplicate": 3, "empty": 3, "unseeable": 3, "unparseable_instruction": 3,
                                  "unparseable_instance": 3, "too_short": 3, "over_target": 1}
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["round"] == 3 and state["requested"] == 24 == state["kept"] + sum(state["dropped"].values())
    dropped = _lines(tmp_path / "run" / "dropped.jsonl")
    assert len(dropped) == sum(summary["dropped"].values())
    duplicate = next(d for d in dropped if d["reason"] == "duplicate")
    assert duplicate["instruction"] == NEAR_SEED
    assert rouge_l_f1(NEAR_SEED, _seed_instructions()[0]) > 0.7
    assert duplicate["rouge_l_max"] == pytest.approx(rouge_l_f1(NEAR_SEED, _seed_instructions()[0]), abs=1e-4)

    records = _lines(cfg.output)
    seen = _seed_instructions()
    for record in records:
        instruction = record["instruction"]
        assert instruction.startswith("Explain ") and record["input"] == ""
        assert record["output"] == f"The answer to: {instruction}"
        assert "image" not in instruction.lower() and len(instruction) >= cfg.min_chars
        assert max(rouge_l_f1(instruction, other) for other in seen) <= cfg.max_rouge_l
        provenance = record["_provenance"]
        assert provenance["teacher"] == ScriptedTeacher.identity and provenance["method"] == "self-instruct"
        assert provenance["template"] == "self-instruct@1" and provenance["seed"] == 3
        assert provenance["judge_score"] is None and provenance["round"] in (0, 1, 2)
        assert provenance["rouge_l_max"] <= cfg.max_rouge_l and provenance["nearest"] is not None
        assert provenance["rouge_l_max"] >= max(rouge_l_f1(instruction, other) for other in seen) - 1e-4
        seen.append(instruction)
    assert len({r["instruction"] for r in records}) == 5


def test_run_record(tmp_path):
    cfg = _config(tmp_path)
    run(cfg, teacher=ScriptedTeacher())
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["stage"] == "synth" and record["status"] == "completed"
    inputs = {i["role"]: i for i in record["inputs"]}
    assert inputs["seeds"]["sha256"] == file_sha256(SEEDS)
    assert inputs["teacher"]["identity"] == ScriptedTeacher.identity
    assert record["parameters"]["max_rouge_l"] == 0.7 and record["parameters"]["template"] == "self-instruct@1"
    assert record["counts"]["kept"] == 5 and record["counts"]["dropped"]["duplicate"] == 3
    assert record["output"] == {"path": cfg.output, "sha256": file_sha256(cfg.output), "records": 5}
    # a second run into the same run_dir must be asked for
    with pytest.raises(HoningError, match="resume=true"):
        run(cfg, teacher=ScriptedTeacher())


def test_judge_filter(tmp_path):
    cfg = _config(tmp_path, judge={"path": "unused"}, min_judge_score=0.5, num_instructions=4)
    summary = run(cfg, teacher=ScriptedTeacher(), judge=ScriptedJudge())
    records = _lines(cfg.output)
    assert len(records) == 4
    assert all(r["_provenance"]["judge_score"] == pytest.approx(8 / 9) for r in records)
    assert summary["dropped"]["judge_low"] >= 1
    lows = [d for d in _lines(tmp_path / "run" / "dropped.jsonl") if d["reason"] == "judge_low"]
    assert all(d["judge_score"] == pytest.approx(1 / 9) for d in lows)


def test_chat_format_and_same_seed_reproduces(tmp_path):
    alpaca = _config(tmp_path / "a")
    chat = _config(tmp_path / "b", format="chat")
    run(alpaca, teacher=ScriptedTeacher())
    run(chat, teacher=ScriptedTeacher())
    for a, c in zip(_lines(alpaca.output), _lines(chat.output)):
        assert c["messages"] == [{"role": "user", "content": a["instruction"]},
                                 {"role": "assistant", "content": a["output"]}]
        assert c["_provenance"] == a["_provenance"]
    other_seed = _config(tmp_path / "c", seed=4)
    run(other_seed, teacher=ScriptedTeacher())
    assert _lines(other_seed.output) != _lines(alpaca.output)


@pytest.mark.parametrize("call", [2, 3, 4, 5])
def test_interrupted_run_resumes_to_the_same_output(tmp_path, call):
    reference = _config(tmp_path / "reference")
    run(reference, teacher=ScriptedTeacher())

    cfg = _config(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, teacher=ScriptedTeacher(interrupt_on_call=call))
    assert json.loads((Path(cfg.run_dir) / "run.json").read_text())["status"] == "interrupted"
    assert not Path(cfg.output).exists()
    kept_before = _lines(Path(cfg.run_dir) / "synth.jsonl") if (Path(cfg.run_dir) / "synth.jsonl").exists() else []
    assert len(kept_before) == 2 * ((call - 1) // 2)  # each finished round (two calls) kept 2
    # a crash between appending a batch and saving the state leaves bytes the resume must cut off
    with (Path(cfg.run_dir) / "synth.jsonl").open("a") as handle:
        handle.write('{"instruction": "half-written batch"}\n')

    teacher = ScriptedTeacher()
    summary = run(cfg.model_copy(update={"resume": True}), teacher=teacher)
    assert summary["status"] == "completed"
    assert _lines(cfg.output) == _lines(reference.output)
    assert _lines(Path(cfg.run_dir) / "dropped.jsonl") == _lines(Path(reference.run_dir) / "dropped.jsonl")
    assert teacher.calls == 6 - 2 * ((call - 1) // 2)  # finished rounds are not asked again
    record = json.loads((Path(cfg.run_dir) / "run.json").read_text())
    assert record["status"] == "completed" and len(record["resumed"]) == 1


def test_ctrl_c_finishes_the_batch_then_resume(tmp_path):
    reference = _config(tmp_path / "reference")
    run(reference, teacher=ScriptedTeacher())
    cfg = _config(tmp_path / "stopped")
    before = signal.getsignal(signal.SIGINT)  # whatever earlier code installed (not always Python's default)
    summary = run(cfg, teacher=ScriptedTeacher(sigint_on_call=1))
    assert summary["status"] == "interrupted" and summary["kept"] == 2  # round 0 finished and saved
    assert not Path(cfg.output).exists()
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    run(cfg.model_copy(update={"resume": True}), teacher=ScriptedTeacher())
    assert _lines(cfg.output) == _lines(reference.output)


def test_resume_with_another_seed_is_refused(tmp_path):
    cfg = _config(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, teacher=ScriptedTeacher(interrupt_on_call=3))
    with pytest.raises(HoningError, match="seed was 3, now 9"):
        run(cfg.model_copy(update={"resume": True, "seed": 9}), teacher=ScriptedTeacher())


def test_max_rounds_stops_short(tmp_path):
    cfg = _config(tmp_path, num_instructions=50, max_rounds=2)
    summary = run(cfg, teacher=ScriptedTeacher())
    assert summary["status"] == "completed" and summary["records"] == 4


def test_configured_teacher_is_used(tmp_path, monkeypatch):
    from honing.models.chat import ChatModel

    built = []

    def load(cfg, sampling=None, *, role, batch_size=8, progress=False):
        built.append((cfg, sampling, role, batch_size))
        return ScriptedTeacher()

    monkeypatch.setattr(ChatModel, "load", load)
    cfg = _config(tmp_path)
    assert run(cfg)["records"] == 5
    assert built == [(cfg.teacher, cfg.sampling, "teacher", cfg.batch_size)]


def test_parsers_and_near_duplicates():
    assert parse_instruction("Sure.\nInstruction: Name a prime.\n") == "Name a prime."
    assert parse_instruction("Task 4: \"List two rivers.\"") == "List two rivers."
    assert parse_instruction("no marker") is None
    assert parse_instruction("Task 1:\n\nWrite a haiku about rain.\nTask 2: other") == "Write a haiku about rain."
    assert parse_instruction("Task 1:\nTask 2: List three metals.") == "List three metals."
    assert parse_instruction("Instruction:   \n") == ""
    assert parse_instance("Input: <noinput>\nOutput: 42") == ("", "42")
    assert parse_instance("Input: 2+2\nOutput:\n4\nmore") == ("2+2", "4\nmore")
    assert parse_instance("just text") is None
    assert parse_instance("Sure.\nOutput: Paris") == ("", "Paris")
    texts = _seed_instructions()
    index = NearDuplicates(texts)
    for query in [NEAR_SEED, "Translate this sentence into German.", "zzz", "Name the odd one and say why not."]:
        expected = max(rouge_l_f1(query, t) for t in texts)
        assert index.nearest(query)[0] == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------- distillation


def _prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    records = [{"prompt": "What is 2 + 2?"},
               {"instruction": "Translate to German.", "input": "Good morning"},
               {"messages": [{"role": "user", "content": "Name a colour."}]},
               {"prompt": "Say hi."},
               {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"},
                             {"role": "assistant", "content": "old answer"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_distill_both_formats(tmp_path):
    prompts = _prompt_file(tmp_path)
    alpaca = SynthConfig(method="distill", prompts=str(prompts), output=str(tmp_path / "a.jsonl"),
                         run_dir=str(tmp_path / "ra"), batch_size=2)
    run(alpaca, teacher=ScriptedTeacher())
    records = _lines(alpaca.output)
    assert [r["instruction"] for r in records] == ["What is 2 + 2?", "Translate to German.", "Name a colour.", "Say hi.",
                                                   "Why is the sky blue?"]
    assert records[1]["input"] == "Good morning"
    assert records[1]["output"] == "Answer to [Translate to German.\n\nGood morning]"
    assert [r["_provenance"]["prompt_index"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["_provenance"]["method"] == "distill" and records[0]["_provenance"]["template"] == "distill@1"

    chat = alpaca.model_copy(update={"format": "chat", "output": str(tmp_path / "c.jsonl"), "run_dir": str(tmp_path / "rc")})
    run(chat, teacher=ScriptedTeacher())
    records = _lines(chat.output)
    assert len(records) == 5
    assert records[4]["messages"] == [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Why is the sky blue?"},
                                      {"role": "assistant", "content": "Answer to [Why is the sky blue?]"}]
    run_record = json.loads((tmp_path / "rc" / "run.json").read_text())
    assert {i["role"]: i["sha256"] for i in run_record["inputs"]}["prompts"] == file_sha256(prompts)


def test_distill_txt_and_resume_skips_done_prompts(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\n\ntwo\nthree\nfour\nfive\n")
    cfg = SynthConfig(method="distill", prompts=str(prompts), output=str(tmp_path / "out.jsonl"),
                      run_dir=str(tmp_path / "run"), batch_size=2, format="chat")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, teacher=ScriptedTeacher(interrupt_on_call=3))
    teacher = ScriptedTeacher()
    run(cfg.model_copy(update={"resume": True}), teacher=teacher)
    assert teacher.seen == ["five"]
    records = _lines(cfg.output)
    assert [r["messages"][0]["content"] for r in records] == ["one", "two", "three", "four", "five"]


def test_distill_empty_answers_are_counted(tmp_path):
    class Silent(ScriptedTeacher):
        def texts(self, conversations, *, seed=None):
            return ["" if "two" in c[-1]["content"] else "ok" for c in conversations]

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\nthree\n")
    cfg = SynthConfig(method="distill", prompts=str(prompts), output=str(tmp_path / "out.jsonl"),
                      run_dir=str(tmp_path / "run"))
    summary = run(cfg, teacher=Silent())
    assert summary["records"] == 2 and summary["dropped"] == {"empty": 1}
    assert _lines(tmp_path / "run" / "dropped.jsonl")[0]["prompt"] == "two"


def test_distill_multi_turn_prompt_needs_chat(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                                {"role": "user", "content": "c"}]}) + "\n")
    cfg = SynthConfig(method="distill", prompts=str(prompts), output=str(tmp_path / "o.jsonl"), run_dir=str(tmp_path / "r"))
    with pytest.raises(DataError, match="format=chat"):
        run(cfg, teacher=ScriptedTeacher())
    assert not (tmp_path / "r").exists()  # nothing written for a bad input


def test_output_is_replaced_atomically(tmp_path, monkeypatch):
    import honing.io
    from honing.errors import HoningError

    cfg = _config(tmp_path)
    Path(cfg.output).parent.mkdir(parents=True)
    Path(cfg.output).write_text("previous\n")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(honing.io.os, "replace", failing_replace)
    with pytest.raises(HoningError, match="cannot write .*No space left on device"):
        run(cfg, teacher=ScriptedTeacher())
    assert Path(cfg.output).read_text() == "previous\n"  # never half-written
    assert not list(Path(cfg.output).parent.glob(".*.tmp"))  # and its temporary file is gone
    monkeypatch.undo()
    run(cfg.model_copy(update={"resume": True}), teacher=ScriptedTeacher())
    assert len(_lines(cfg.output)) == 5


# ----------------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, message", [
    (["method=self_instruct"], "needs seeds"),
    (["method=distill"], "needs prompts"),
    ([f"seeds={SEEDS}", "min_judge_score=0.5"], "needs a judge"),
    ([f"seeds={SEEDS}", "judge.path=x"], "needs min_judge_score"),
    ([f"seeds={SEEDS}", "resume=true"], "needs run_dir"),
    ([f"seeds={SEEDS}", "teacher.endpoint=http://x/v1"], "endpoint_model"),
    ([f"seeds={SEEDS}", "output=out.csv"], ".jsonl"),
    ([f"seeds={SEEDS}", "min_chars=10", "max_chars=5"], "min_chars"),
    ([f"seeds={SEEDS}", "tempreature=1"], "tempreature"),
])
def test_config_validation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SynthConfig, None, overrides)


def test_config_defaults_and_no_torch():
    import subprocess
    import sys

    cfg = load_config(SynthConfig, None, [f"seeds={SEEDS}"])
    assert cfg.sampling.temperature == 0.7 and cfg.max_rouge_l == 0.7 and cfg.in_context == 3
    code = "import sys, honing.synth, honing.config.synth; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    for name, field in SynthConfig.model_fields.items():
        assert field.description, f"SynthConfig.{name} has no docstring"


def test_bad_seed_file(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "ok task here"}\n{"output": "no instruction"}\n')
    with pytest.raises(DataError, match="seeds.jsonl:2"):
        run(_config(tmp_path, seeds=str(seeds)), teacher=ScriptedTeacher())


# ----------------------------------------------------------------------- real teachers


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "body": body, "authorization": self.headers.get("Authorization")})
        payload = json.dumps({"choices": [{"message": {"content": "answer: " + body["messages"][-1]["content"]}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_endpoint_teacher(tmp_path, monkeypatch):
    handler = type("Handler", (_Handler,), {"seen": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    monkeypatch.setenv("HONING_TEST_TEACHER_KEY", "secret-key")
    try:
        prompts = tmp_path / "p.txt"
        prompts.write_text("hello\nworld\n")
        cfg = SynthConfig(method="distill", prompts=str(prompts), output=str(tmp_path / "o.jsonl"),
                          run_dir=str(tmp_path / "r"), teacher={"endpoint": url, "endpoint_model": "big-teacher",
                                                                "api_key_env": "HONING_TEST_TEACHER_KEY"})
        from honing.models.chat import ChatModel

        assert ChatModel.load(cfg.teacher, cfg.sampling, role="teacher").kind == "endpoint"
        run(cfg)
        # A conversation ending with an assistant turn is a prefill: the server is asked to continue it (vLLM).
        ChatModel.load(cfg.teacher, cfg.sampling, role="teacher").complete([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "I can't"}]])
        assert handler.seen[-1]["body"]["continue_final_message"] is True
        assert handler.seen[-1]["body"]["add_generation_prompt"] is False
        assert "continue_final_message" not in handler.seen[0]["body"]
    finally:
        server.shutdown()
        server.server_close()
    records = _lines(cfg.output)
    assert [r["output"] for r in records] == ["answer: hello", "answer: world"]
    assert records[0]["_provenance"]["teacher"] == {"kind": "endpoint", "endpoint": url, "model": "big-teacher"}
    first = handler.seen[0]
    assert first["path"] == "/v1/chat/completions" and first["authorization"] == "Bearer secret-key"
    assert first["body"]["model"] == "big-teacher" and first["body"]["temperature"] == 0.7
    for path in [cfg.output, tmp_path / "r" / "run.json", tmp_path / "r" / "config.yaml", tmp_path / "r" / "synth.jsonl"]:
        assert "secret-key" not in Path(path).read_text()


def test_local_teacher_on_tiny_model(tmp_path, tiny_model_dir):
    prompts = tmp_path / "p.txt"
    prompts.write_text("What is 2 + 2?\nName a colour.\n")
    cfg = SynthConfig(method="distill", prompts=str(prompts), output=str(tmp_path / "o.jsonl"), run_dir=str(tmp_path / "r"),
                      teacher={"path": str(tiny_model_dir)}, sampling={"max_new_tokens": 8, "temperature": 0.7})
    summary = run(cfg)
    assert summary["records"] + sum(summary["dropped"].values()) == 2
    identity = _lines(cfg.output)[0]["_provenance"]["teacher"]
    assert identity["kind"] == "local" and identity["path"] == str(tiny_model_dir) and identity["sha256"]
    inputs = {i["role"]: i for i in json.loads((tmp_path / "r" / "run.json").read_text())["inputs"]}
    assert inputs["teacher"]["sha256"] == identity["sha256"]
