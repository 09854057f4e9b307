"""`rag:` on a served model, as a client sees it: the official openai client over 127.0.0.1 against a server of
the tiny random llama with a three-document index. Its words are noise; what is checked is that the retrieved
chunks reach the model's prompt (the logged prompt, and more prompt tokens than the same model without rag), that
the response, the stream, /v1/models, /metrics and the log name them, and that a missing index stops the start."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.serve.conftest import HONING, serving

FACTS = {"zephyr.md": ("Zephyr relay", "QX-4471"), "tulip.md": ("Tulip lamp", "BR-2290"),
         "orca.md": ("Orca pump", "MT-6013")}
RAG = {"k": 2, "candidates": 3}


@pytest.fixture(scope="module")
def rag_index(tmp_path_factory) -> Path:
    from honing.config.rag import RagIndexConfig
    from honing.stages.rag import index

    root = tmp_path_factory.mktemp("rag-index")
    docs = root / "docs"
    docs.mkdir()
    for name, (thing, code) in FACTS.items():
        (docs / name).write_text(f"# {thing}\n\nThe {thing}'s activation code is {code}. Keep it private.\n")
    index(RagIndexConfig(docs=[str(docs)], index=str(root / "idx")))
    return root / "idx"


def _config(folder: Path, models: dict) -> Path:
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


@pytest.fixture(scope="module")
def rag_server(tiny_model_dir, rag_index, tmp_path_factory):
    """`bot` answers from the index; `plain` is the same weights (one copy in memory) without it."""
    root = tmp_path_factory.mktemp("rag-server")
    config = _config(root, {"bot": {"path": str(tiny_model_dir), "rag": {"index": str(rag_index), **RAG}},
                            "plain": {"path": str(tiny_model_dir)}})
    with serving(root, str(config)) as server:
        yield server


def _rows(log: Path) -> dict[str, dict]:
    conn = sqlite3.connect(log)
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM requests")}
    finally:
        conn.close()


def test_a_rag_model_answers_with_the_chunks_in_its_prompt_and_names_them(rag_server):
    assert "answering from the index" in rag_server.output and "(top 2, hybrid)" in rag_server.output
    client = rag_server.client()
    question = "What is the Tulip lamp's activation code?"
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello."},
               {"role": "assistant", "content": "Hi."}, {"role": "user", "content": question}]
    asked = {"messages": history, "max_tokens": 4, "temperature": 0}
    grounded = client.chat.completions.create(model="bot", **asked)
    plain = client.chat.completions.create(model="plain", **asked)

    sources = grounded.model_extra["sources"]  # an extra field: the official client keeps it
    assert sources == grounded.sources and len(sources) == RAG["k"]
    assert sources[0]["id"].startswith("tulip.md#") and sources[0]["source"] == "tulip.md"
    assert all(set(s) == {"id", "source", "score"} for s in sources)  # no server paths for the client
    assert "sources" not in (plain.model_extra or {})
    # The chunks are in the prompt: the same conversation costs the rag model many more prompt tokens.
    assert grounded.usage.prompt_tokens > plain.usage.prompt_tokens + 40

    rows = _rows(rag_server.log)
    row, plain_row = rows[grounded.id], rows[plain.id]
    messages = json.loads(row["request"])["messages"]
    assert messages[:3] == history[:3]  # only the last user message is replaced
    turn = messages[-1]["content"]
    assert f"[{sources[0]['id']}]" in turn and "BR-2290" in turn and turn.endswith(f"Question: {question}")
    logged = json.loads(row["sources"])
    assert logged["index"].endswith("idx") and [c["id"] for c in logged["chunks"]] == [s["id"] for s in sources]
    assert logged["chunks"][0]["path"].endswith("tulip.md")
    assert plain_row["sources"] is None and json.loads(plain_row["request"])["messages"] == history

    # /v1/completions: the prompt is the question.
    completion = client.completions.create(model="bot", prompt="What is the Orca pump's activation code?",
                                           max_tokens=4, temperature=0)
    assert completion.model_extra["sources"][0]["id"].startswith("orca.md#")
    assert json.loads(_rows(rag_server.log)[completion.id]["request"])["prompt"].startswith("Answer the question")

    listed = {m.id: m.model_extra for m in client.models.list().data}
    assert listed["bot"]["rag"] == {"index": "idx", "k": 2, "mode": "hybrid"} and "rag" not in listed["plain"]
    with urllib.request.urlopen(rag_server.url.removesuffix("/v1") + "/metrics", timeout=30) as response:
        metrics = response.read().decode()
    assert 'honing_retrieval_duration_seconds_count{model="bot"} 2.0' in metrics


def test_a_streamed_rag_answer_sends_its_sources_first(rag_server):
    client = rag_server.client()
    stream = client.chat.completions.create(
        model="bot", messages=[{"role": "user", "content": "What is the Zephyr relay's activation code?"}],
        max_tokens=4, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    first = chunks[0].model_extra["sources"]
    assert first[0]["id"].startswith("zephyr.md#") and len(first) == RAG["k"]
    assert not any("sources" in (c.model_extra or {}) for c in chunks[1:])
    assert [c["id"] for c in json.loads(_rows(rag_server.log)[chunks[0].id]["sources"])["chunks"]] == \
        [s["id"] for s in first]
    pieces = list(client.completions.create(model="bot", prompt="What is the Orca pump's activation code?",
                                            max_tokens=4, temperature=0, stream=True))
    assert pieces[0].model_extra["sources"][0]["id"].startswith("orca.md#")


def test_an_empty_question_is_a_400(rag_server):
    import openai

    with pytest.raises(openai.BadRequestError, match="answers from an index"):
        rag_server.client().chat.completions.create(model="bot", messages=[{"role": "user", "content": "  "}],
                                                    max_tokens=4)


def test_a_missing_index_stops_the_start_with_one_line(tiny_model_dir, tmp_path):
    config = _config(tmp_path, {"bot": {"path": str(tiny_model_dir), "rag": {"index": str(tmp_path / "nowhere")}}})
    done = subprocess.run([*HONING, "serve", str(config), "--port", "0", f"log.path={tmp_path / 'log.sqlite'}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "COLUMNS": "400", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1, done.stderr
    assert "models.bot.rag: index" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_prompt_over_the_limit_says_the_context_came_from_retrieval():
    from honing.config.serve import ServeConfig
    from honing.serve.app import APIError, Server

    server = SimpleNamespace(cfg=ServeConfig(limits={"max_prompt_tokens": 100}))
    target = SimpleNamespace(name="bot", capacity=512)
    with pytest.raises(APIError, match=r"with the 4 chunks retrieved for it is 150 tokens.*models\.bot\.rag\.k"):
        Server.check_prompt(server, list(range(150)), 8, target, "messages", retrieved=4)
    with pytest.raises(APIError, match=r"^the prompt is 150 tokens; this server allows at most 100$"):
        Server.check_prompt(server, list(range(150)), 8, target, "messages")


def test_a_version_1_request_log_gains_the_sources_column(tmp_path):
    from honing.serve.log import (
        SCHEMA,
        LoggedRequest,
        RequestLog,
        connect,
        read_requests,
    )

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA.replace(",\n    sources TEXT", ""))
    old.execute("INSERT INTO requests (id, created, endpoint, status) VALUES ('chatcmpl-old', 1.0, 'chat', 200)")
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()
    writer = RequestLog(path)
    writer.record(LoggedRequest(id="chatcmpl-new", endpoint="chat.completions", status=200, created=2.0,
                                sources={"index": "idx", "chunks": [{"id": "a.md#0"}]}))
    writer.close()
    rows = read_requests(connect(path, create=False))
    assert [(r["id"], r["sources"]) for r in rows] == [("chatcmpl-old", None),
                                                       ("chatcmpl-new", {"index": "idx", "chunks": [{"id": "a.md#0"}]})]
