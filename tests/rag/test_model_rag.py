"""`rag:` on a model entry: the same model, asked through honing's one ChatModel, answers from retrieved chunks —
here inside `honing eval`, with an OpenAI-compatible server on 127.0.0.1 that can only answer from its prompt."""

from __future__ import annotations

import json
import re

from honing.config import EvalConfig, EvalModelConfig, EvalTaskConfig
from honing.config.model import ChatModelConfig
from honing.config.output import OutputConfig
from honing.config.rag import RagIndexConfig
from honing.config.stages import STAGES
from tests.fake_openai import serve as fake_openai
from tests.rag.facts import FACTS, write_fact_docs


def _reply(body: dict) -> str:
    """A model that knows nothing: it answers with the activation code named in its prompt, else 'unknown'."""
    prompt = body["messages"][-1]["content"]
    asked = re.search(r"What is the (.+?)'s activation code", prompt)
    found = re.search(rf"The {re.escape(asked[1])}'s activation code is ([A-Z]{{2}}-\d{{4}})", prompt) if asked else None
    return found[1] if found else "unknown"


def test_rag_in_a_model_entry_answers_eval_questions_from_the_index(tmp_path):
    from honing.stages.rag import index

    docs = write_fact_docs(tmp_path / "docs")
    index(RagIndexConfig(docs=[str(docs)], index=str(tmp_path / "idx")))
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is the {thing}'s activation code?", "answer": code}) + "\n"
                            for thing, code in FACTS.values()))
    with fake_openai(_reply) as (handler, url):
        models = [EvalModelConfig(name="plain", role="base", endpoint=f"{url}/v1", endpoint_model="m"),
                  EvalModelConfig(name="with_rag", role="candidate", endpoint=f"{url}/v1", endpoint_model="m",
                                  rag={"index": str(tmp_path / "idx"), "k": 1, "candidates": 3})]
        result = STAGES["eval"].run(EvalConfig(
            models=models, tasks=[EvalTaskConfig(name="codes", data=str(data), metrics=["exact_match"],
                                                 max_new_tokens=8)],
            cache=False, output=OutputConfig(dir=str(tmp_path / "eval"), tensorboard=False)))
    scores = result["scores"]
    assert scores["plain"]["codes"]["exact_match"]["mean"] == 0.0
    assert scores["with_rag"]["codes"]["exact_match"]["mean"] == 1.0
    # What the RAG entry sent: the question after the retrieved chunk, labelled with its id.
    rag_prompts = [r["body"]["messages"][-1]["content"] for r in handler.requests if "Context:" in
                   r["body"]["messages"][-1]["content"]]
    assert len(rag_prompts) == 3 and all("[" in p and ".md#" in p for p in rag_prompts)
    record = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert json.dumps(str(tmp_path / "idx")) in json.dumps(record)  # the run record names the index used


def test_a_missing_index_on_a_model_entry_is_one_line(tmp_path):
    import pytest

    from honing.config import ChatModelConfig
    from honing.errors import HoningError
    from honing.models.chat import ChatModel

    with pytest.raises(HoningError, match="index"):
        ChatModel.load(ChatModelConfig(endpoint="http://127.0.0.1:9/v1", endpoint_model="m",
                                       rag={"index": str(tmp_path / "nowhere")}), role="model")


def test_the_answer_cache_keeps_answers_with_and_without_rag_apart(tmp_path):
    from honing.evals.runner import model_fingerprint
    from honing.stages.rag import index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nThe code word is amber.\n")
    def build() -> None:
        index(RagIndexConfig(docs=[str(docs)], index=str(tmp_path / "idx")))

    build()
    plain = ChatModelConfig(endpoint="http://127.0.0.1:1/v1", endpoint_model="m")
    with_rag = ChatModelConfig.model_validate({**plain.model_dump(), "rag": {"index": str(tmp_path / "idx"), "k": 2}})
    first = model_fingerprint(with_rag)
    assert first != model_fingerprint(plain)
    other_k = ChatModelConfig.model_validate({**with_rag.model_dump(), "rag": {"index": str(tmp_path / "idx"), "k": 3}})
    assert model_fingerprint(other_k) != first
    build()  # an update that changes nothing (a new run.json) keeps the answers
    assert model_fingerprint(with_rag) == first
    (docs / "b.md").write_text("# B\n\nThe code word is teal.\n")
    build()  # a new document: other chunks can be retrieved, so other answers
    assert model_fingerprint(with_rag) != first
