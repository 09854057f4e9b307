"""`honing lineage` on real records: a data chain (clean → dedup → split) and two sft runs, the second trained
from the first, made once per module with the real commands; each test that damages the chain works on a copy.
The records hold paths relative to the directory the commands ran in, as they do for a user."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from honing.cli import main
from honing.registry.lineage import Lineage, build_lineage
from tests import test_cli
from tests.test_cli import one_error_line

run_cli = test_cli.run_cli
"""`honing ARGS` in-process in tmp_path: (exit code, stdout, stderr) (the fixture of tests/test_cli.py)."""

QUESTIONS = [{"messages": [{"role": "user", "content": f"What is the weather like in town {i} this morning?"},
                           {"role": "assistant", "content": f"Town {i} is sunny and warm this morning, answer {i}."}]}
             for i in range(30)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def honing(*args: str) -> None:
    """One command, in-process, as typed."""
    sys.argv = ["honing", *args]
    try:
        main()
    except SystemExit as err:
        assert not err.code, f"honing {' '.join(args)} exited with {err.code}"


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model_dir) -> Path:
    from honing.config import SFTConfig, load_config
    from honing.stages.sft import sft

    root = tmp_path_factory.mktemp("chain")
    training = ["data.max_length=64", "train.micro_batch_size=4", "output.tensorboard=false", "adapter.rank=4",
                "train.save_every=100", "data.train=splits/train.jsonl"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("HONING_CACHE", str(root / ".cache"))
        patch.setattr(sys, "argv", sys.argv)
        (root / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*QUESTIONS, QUESTIONS[0]]))
        honing("data", "clean", "raw.jsonl", "-o", "clean.jsonl", "workers=1", "run_dir=runs/clean")
        honing("data", "dedup", "clean.jsonl", "-o", "dedup.jsonl", "workers=1", "run_dir=runs/dedup")
        honing("data", "split", "dedup.jsonl", "-o", "splits/", "workers=1", "run_dir=runs/split")
        sft(load_config(SFTConfig, None, [*training, f"model.path={tiny_model_dir}", "train.max_steps=2",
                                          "data.validation=splits/validation.jsonl", "output.dir=runs/sft"]))
        sft(load_config(SFTConfig, None, [*training, "model.path=runs/sft", "train.max_steps=1", "output.dir=runs/sft2"]))
    return root


@pytest.fixture()
def copy(chain, tmp_path, monkeypatch) -> Path:
    """The chain, copied (relative paths and all) to a place of its own, with the working directory elsewhere."""
    target = tmp_path / "copy"
    shutil.copytree(chain, target, ignore=shutil.ignore_patterns(".cache"))
    monkeypatch.chdir(tmp_path)
    return target


def only(graph: Lineage, node_id: str, role: str | None = None):
    """The one upstream (edge, node) of node_id (with that role)."""
    found = [(e, n) for e, n in graph.upstream(node_id) if role is None or e.role == role]
    assert len(found) == 1, found
    return found[0]


def reachable(graph: Lineage, start: str) -> set[str]:
    seen, pending = set(), [start]
    while pending:
        node_id = pending.pop()
        for _, node in graph.upstream(node_id):
            if node.id not in seen:
                seen.add(node.id)
                pending.append(node.id)
    return seen


def by_stage(graph: Lineage, stage: str):
    found = [n for n in graph.nodes.values() if n.kind == "run" and n.stage == stage]
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- the walk


def test_from_the_adapter_back_to_the_raw_bytes(chain, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./runs here: the data runs are found beside the sft run
    graph = build_lineage(chain / "runs" / "sft" / "adapter")
    model = graph.nodes[graph.root]
    assert (model.kind, model.path, model.status) == ("model", str(chain / "runs/sft/adapter"), "present")

    edge, sft = only(graph, model.id)
    assert (edge.role, sft.kind, sft.stage, sft.path) == ("adapter", "run", "sft", str(chain / "runs/sft"))
    assert sft.run_id == json.loads((chain / "runs/sft/run.json").read_text())["run_id"]
    _, base = only(graph, sft.id, "base_model")
    assert base.kind == "model" and base.path == str(tiny_model_dir.resolve())
    assert base.sha256 == sha256(tiny_model_dir / "model.safetensors")

    _, train = only(graph, sft.id, "data_train")
    _, validation = only(graph, sft.id, "data_validation")
    for node, name in ((train, "train"), (validation, "validation")):
        assert node.kind == "file" and node.path == str(chain / "splits" / f"{name}.jsonl")
        assert node.sha256 == sha256(chain / "splits" / f"{name}.jsonl")
    edge, split = only(graph, train.id)
    assert (edge.role, edge.matched_by, split.stage) == ("output:train", "sha256", "data-split")
    assert only(graph, validation.id)[1] is split  # one node, reached twice

    files = {}
    node = split
    for stage, role, name in (("data-split", "input", "dedup.jsonl"), ("data-dedup", "input:train", "clean.jsonl"),
                              ("data-clean", "input", "raw.jsonl")):
        assert node.stage == stage
        edge, file = only(graph, node.id)
        assert (edge.role, file.kind, file.path, file.sha256) == (role, "file", str(chain / name), sha256(chain / name))
        files[name] = file
        if name != "raw.jsonl":
            edge, node = only(graph, file.id)
            assert edge.matched_by == "sha256"
    assert graph.upstream(files["raw.jsonl"].id) == []  # the raw bytes: nothing made them
    assert graph.summary == {"nodes": 11, "run": 4, "file": 5, "model": 2, "external": 0, "present": 11}
    assert graph.passed is None


def test_a_run_trained_from_a_run_walks_its_parent_chain(chain):
    graph = build_lineage(chain / "runs" / "sft2")
    root = graph.nodes[graph.root]
    assert (root.kind, root.stage) == ("run", "sft")
    parent = next(n for n in graph.nodes.values() if n.path == str(chain / "runs/sft") and n.kind == "run")
    upstream = reachable(graph, root.id)
    assert parent.id in upstream
    assert [n.stage for n in graph.nodes.values() if n.kind == "run"].count("data-split") == 1
    assert str(chain / "raw.jsonl") in {graph.nodes[i].path for i in reachable(graph, parent.id)}


def test_a_data_file_is_traced_to_the_run_that_wrote_it(chain, monkeypatch):
    monkeypatch.chdir(chain)
    graph = build_lineage("splits/train.jsonl", verify=True)
    edge, split = only(graph, graph.root)
    assert (split.stage, edge.matched_by) == ("data-split", "sha256")
    assert graph.nodes[graph.root].status == "ok" and graph.passed
    raw = build_lineage("raw.jsonl")  # data clean read these bytes and wrote the same bytes elsewhere: not its maker
    assert list(raw.nodes) == [raw.root]


def test_run_directories_elsewhere_are_found_through_search(copy, monkeypatch):
    archive = copy / "archive"
    archive.mkdir()
    for name in ("clean", "dedup"):
        shutil.move(copy / "runs" / name, archive / name)
    monkeypatch.chdir(copy)
    alone = build_lineage("runs/sft/adapter")
    assert "data-dedup" not in {n.stage for n in alone.nodes.values()}
    found = build_lineage("runs/sft/adapter", search=[str(archive)], verify=True)
    assert {"data-dedup", "data-clean"} <= {n.stage for n in found.nodes.values()} and found.passed


# --------------------------------------------------------------------------- verify


def test_verify_flags_a_tampered_and_a_deleted_file(copy, run_cli):
    raw, clean = copy / "raw.jsonl", copy / "clean.jsonl"
    recorded = sha256(raw)
    raw.write_text(raw.read_text().replace("sunny", "rainy", 1))
    clean.unlink()
    graph = build_lineage(copy / "runs/sft/adapter", verify=True)
    status = {n.path: n.status for n in graph.nodes.values() if n.kind == "file"}
    assert status.pop(str(raw)) == "changed" and status.pop(str(clean)) == "missing"
    assert set(status.values()) == {"ok"}
    node = next(n for n in graph.nodes.values() if n.path == str(raw))
    assert node.sha256 == recorded and node.actual_sha256 == sha256(raw)
    assert (graph.summary["changed"], graph.summary["missing"], graph.passed) == (1, 1, False)

    code, out, err = run_cli("lineage", copy / "runs/sft/adapter", "--verify")
    assert code == 3, err
    assert re.search(r"raw\.jsonl .*changed \(now [0-9a-f]{12}\)", out) and re.search(r"clean\.jsonl .*missing", out)
    assert "1 changed, 1 missing" in out and "FAILED" in out and "Traceback" not in out + err
    assert run_cli("lineage", copy / "runs/sft/adapter")[0] == 0  # without --verify nothing is re-hashed


def test_verify_on_a_run_directory_re_hashes_its_models(copy, run_cli):
    graph = build_lineage(copy / "runs/sft", verify=True)
    (edge, adapter), = graph.downstream(graph.root)
    assert (edge.role, adapter.kind, adapter.path) == ("adapter", "model", str(copy / "runs/sft/adapter"))
    recorded = json.loads((copy / "runs/sft/run.json").read_text())["output_sha256"]["adapter"]
    assert adapter.sha256 == recorded and adapter.status == "ok" and graph.passed
    code, out, err = run_cli("lineage", copy / "runs/sft", "--verify")
    assert code == 0 and re.search(r"adapter → model .*adapter .*ok", out), out + err

    weights = copy / "runs/sft/adapter/adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    code, out, err = run_cli("lineage", copy / "runs/sft", "--verify")
    assert code == 3 and re.search(r"adapter .*changed \(now [0-9a-f]{12}\)", out) and "FAILED" in out, out + err


def test_the_graph_still_builds_when_run_directories_are_gone(copy, run_cli):
    shutil.rmtree(copy / "runs" / "dedup")
    (copy / "runs" / "clean" / "run.json").write_text("{not json")
    graph = build_lineage(copy / "runs/sft/adapter", verify=True)
    dedup_output = next(n for n in graph.nodes.values() if n.path == str(copy / "dedup.jsonl"))
    assert graph.upstream(dedup_output.id) == [] and graph.passed  # its maker's record is gone: a leaf

    shutil.rmtree(copy / "runs" / "sft")  # the parent of sft2, adapter and all
    graph = build_lineage(copy / "runs/sft2", verify=True)
    gone = [n for n in graph.nodes.values() if n.kind == "run" and n.path == str(copy / "runs/sft")]
    assert len(gone) == 1 and gone[0].status == "missing" and gone[0].id in reachable(graph, graph.root)
    assert graph.passed is False
    code, out, err = run_cli("lineage", copy / "runs/sft2", "--verify")
    assert code == 3 and "missing" in out and "Traceback" not in out + err


# --------------------------------------------------------------------------- output formats


def test_json_and_dot_hold_the_nodes_and_edges(chain, run_cli, tmp_path):
    adapter = chain / "runs/sft/adapter"
    graph = build_lineage(adapter)
    code, _, err = run_cli("lineage", adapter, "--format", "json", "-o", tmp_path / "lineage.json")
    assert code == 0, err
    data = json.loads((tmp_path / "lineage.json").read_text())
    assert {"target", "root", "verified", "passed", "summary", "nodes", "edges"} <= set(data)
    assert data["root"] == graph.root and data["summary"] == graph.summary
    assert [n["id"] for n in data["nodes"]] == list(graph.nodes)
    assert {(e["downstream"], e["upstream"], e["role"]) for e in data["edges"]} == {
        (e.downstream, e.upstream, e.role) for e in graph.edges}
    assert set(data["nodes"][0]) >= {"id", "kind", "label", "path", "sha256", "actual_sha256", "status", "stage",
                                     "run_id", "hashed_as", "details"}

    code, out, err = run_cli("lineage", adapter, "format=dot")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "digraph lineage {" and lines[-1] == "}"
    nodes = {m[1] for line in lines if (m := re.fullmatch(r'  "([^"]+)" \[label="[^"]*", shape=\w+.*\];', line))}
    edges = {m.groups() for line in lines if (m := re.fullmatch(r'  "([^"]+)" -> "([^"]+)" \[label="([^"]+)"\];', line))}
    assert nodes == set(graph.nodes)
    assert edges == {(e.upstream, e.downstream, e.role) for e in graph.edges}

    code, out, _ = run_cli("lineage", adapter)  # the tree: every node, the split run named again once
    assert code == 0 and "raw.jsonl" in out and out.count("(shown above)") >= 1 and "11 nodes" in out


# --------------------------------------------------------------------------- mistakes


def test_bad_targets_are_one_line(run_cli, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "run.json").write_text("{not json")
    (tmp_path / "listed").mkdir()
    (tmp_path / "listed" / "run.json").write_text("[]")
    cases = {("nope.jsonl",): "does not exist", ("plain",): "neither a run directory",
             ("damaged",): "damaged", ("listed",): "not a run record", ("raw.jsonl", "format=xml"): "format",
             (): "target is required", ("raw.jsonl", "search=[nowhere]"): "search: nowhere is not a directory"}
    (tmp_path / "raw.jsonl").write_text('{"text": "x"}\n')
    try:
        import honing.registry.refs  # noqa: F401
        cases[("registry:no such@@",)] = "registry"
    except ImportError:
        pass
    for args, expected in cases.items():
        code, out, err = run_cli("lineage", *args)
        assert code == 1, (args, out, err)
        assert expected in one_error_line(err), (args, err)


# --------------------------------------------------------------------------- registered versions


def test_a_registered_version_answers_even_when_its_run_is_gone(copy, run_cli, monkeypatch):
    monkeypatch.setenv("HONING_REGISTRY", str(copy.parent / "registry.sqlite"))
    code, _, err = run_cli("registry", "register", copy / "runs/sft", "--name", "bot")
    assert code == 0, err
    graph = build_lineage("registry:bot@1", verify=True)
    model = graph.nodes[graph.root]
    assert model.details["registry"] == "bot@1" and model.status == "ok"
    assert model.sha256 == sha256(copy / "runs/sft/adapter/adapter_model.safetensors")
    assert {"data-clean", "data-dedup", "data-split", "sft"} <= {n.stage for n in graph.nodes.values()}

    shutil.rmtree(copy / "runs" / "sft")
    graph = build_lineage("registry:bot@1", verify=True)  # walked on from the registry's copy of run.json
    _, run = only(graph, graph.root)
    assert (run.status, run.details["record_from"], run.stage) == ("missing", "registry", "sft")
    assert graph.nodes[graph.root].status == "missing"
    assert any(n.path == str(copy / "raw.jsonl") for n in graph.nodes.values())
    code, out, err = run_cli("lineage", "registry:bot@1", "--verify", "--format", "json")
    assert code == 3 and json.loads(out)["passed"] is False, err


def test_a_registered_run_whose_record_was_replaced_is_walked_from_the_registry(copy, run_cli, monkeypatch):
    monkeypatch.setenv("HONING_REGISTRY", str(copy.parent / "registry.sqlite"))
    assert run_cli("registry", "register", copy / "runs/sft", "--name", "bot")[0] == 0
    registered = json.loads((copy / "runs/sft/run.json").read_text())["run_id"]
    other = json.loads((copy / "runs/sft2/run.json").read_text())["run_id"]
    shutil.copy(copy / "runs/sft2/run.json", copy / "runs/sft/run.json")

    graph = build_lineage("registry:bot@1", verify=True)
    _, run = only(graph, graph.root)
    assert (run.run_id, run.status, run.details["on_disk_run_id"]) == (registered, "changed", other)
    assert run.details["record_from"] == "registry" and graph.passed is False
    assert "data-split" in {n.stage for n in graph.nodes.values()}  # walked on from the registry's copy
    code, out, err = run_cli("lineage", "registry:bot@1", "--verify")
    assert code == 3 and f"now the record of run {other}" in out and "FAILED" in out, out + err
