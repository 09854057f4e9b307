"""Lineage: the graph from a model back to the raw bytes that made it, read from the run records alone.

    build_lineage(target, search=(), verify=False) -> Lineage

`target` is a model (a run's `adapter/` or `model/`), a run directory (with the models it saved, edges from them to
it, so verify re-hashes them too), a data file, or `registry:NAME@V` (`@alias`: walked from the registered run's
record, or the registry's copy of it when its run.json on disk is gone, damaged or another run's, the run node then
`changed` or `damaged` with the record on disk in its details). The walk goes upstream: a model to the run that made it (its `outputs`), a run to its `inputs`
(data files, base model, teacher, probes ...) and its `parent`, and a file to the run that wrote it, found by
indexing the `run.json` files under the search roots: `./runs`, each directory of `search`, and the directory
holding every run reached. A recorded input is matched to a recorded output by sha256 first (so moved files
still match), then by resolved path (only where the two hashes do not disagree), then by the run directory the
file lies in; a producer must have started no later than the run that read its file. Every node appears once,
so shared inputs and cycles end the walk. Nothing is recomputed but the hashes `verify` asks for, with the
function that made each recorded hash (`hashed_as`): file bytes or a file tree (`honing.runs.tree_sha256`), a
training stage's data tree (`honing.data.cache.path_sha256`), model weights (`weights_sha256`), a model
source as loading records it; eval and redteam fingerprints cannot be re-hashed and stay `unchecked`.

`Lineage.to_dict()`, the JSON that `honing lineage format=json` writes:

    {"target": "runs/sft-x/adapter",            # as given
     "root": "model:/abs/runs/sft-x/adapter",   # the id of the target's node
     "verified": false,                         # whether --verify re-hashed the files
     "passed": null,                            # verify: true when nothing changed or went missing; else null
     "summary": {"nodes": 9, "run": 4, "file": 4, "model": 1, "external": 0,
                 "present": 9, "missing": 0, ...},   # nodes per kind, then per status
     "nodes": [{"id": "file:/abs/raw.jsonl#de4dca93ca72", "kind": "file",  # model | run | file | external
                "label": "raw.jsonl", "path": "/abs/raw.jsonl",
                "sha256": "de4d…",              # as the records hold it (null: none recorded)
                "actual_sha256": null,          # re-hashed now (verify only)
                "status": "present",            # present | missing | damaged | external; with verify also
                                                # ok | changed | unchecked (nothing recorded to compare with)
                "hashed_as": "file",            # file | data | weights | model | fingerprint | null
                "stage": null, "run_id": null,  # a run's stage and id
                "details": {}},                 # runs: status, started, finished, command, git_commit ...
               ...],
     "edges": [{"downstream": "run:sft-…", "upstream": "file:/abs/splits/train.jsonl#8776f638d510",
                "role": "data_train",           # the input's role; file → run: the output's role
                "matched_by": null},            # file → run: sha256 | path | run_dir | contains
               ...]}

Edges point upstream: `downstream` was made from (or by) `upstream`.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from honing.errors import HoningError
from honing.registry.refs import parse_ref
from honing.registry.run_index import RunIndex, RunRecord, enclosing_run_dir, read_run, working_dir
from honing.registry.store import Registry, Version, default_path
from honing.runs import RUN_FILE, file_sha256, tree_sha256

KINDS = ("model", "run", "file", "external")
FAILED = ("changed", "missing", "damaged")
"""Statuses that fail a verify."""
MODEL_ROLES = {"base_model", "adapter", "teacher", "judge", "target", "attacker", "model", "feedback"}
OUTPUT_MODEL_ROLES = ("model", "adapter", "reward_model")
"""The outputs that are models: a run directory's lineage re-hashes them with verify."""
FINGERPRINT_STAGES = {"eval", "redteam", "constitute"}
"""Stages whose model inputs carry a fingerprint of the weights and loading settings, not a content hash."""
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
"""sha256 of no bytes: every empty side file has it, so it says nothing about where a file came from."""
_EPOCH = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
_SCHEME = re.compile(r"^[A-Za-z][\w+.-]+:(?![\\/])")
"""builtin:general, lm-eval:task, http://… : names that are not paths on this machine."""


# --------------------------------------------------------------------------- the graph


@dataclass
class Node:
    id: str
    kind: str
    """model, run, file or external."""
    label: str
    path: str | None = None
    sha256: str | None = None
    """The hash the records hold."""
    actual_sha256: str | None = None
    """The hash of what is on disk now (verify only)."""
    status: str = "present"
    stage: str | None = None
    run_id: str | None = None
    hashed_as: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Edge:
    downstream: str
    upstream: str
    role: str
    matched_by: str | None = None


@dataclass
class Lineage:
    """The graph: nodes by id, and edges from each node to what it was made from."""

    target: str
    root: str
    nodes: dict[str, Node]
    edges: list[Edge]
    verified: bool = False

    def upstream(self, node_id: str) -> list[tuple[Edge, Node]]:
        """What `node_id` was made from, in the order the records list it."""
        return [(edge, self.nodes[edge.upstream]) for edge in self.edges if edge.downstream == node_id]

    def downstream(self, node_id: str) -> list[tuple[Edge, Node]]:
        """What was made from (or by) `node_id` in the graph: for a run directory's lineage, the run's models."""
        return [(edge, self.nodes[edge.downstream]) for edge in self.edges if edge.upstream == node_id]

    @property
    def summary(self) -> dict[str, int]:
        counts = {"nodes": len(self.nodes), **{kind: 0 for kind in KINDS}}
        for node in self.nodes.values():
            counts[node.kind] += 1
            counts[node.status] = counts.get(node.status, 0) + 1
        return counts

    @property
    def passed(self) -> bool | None:
        """With verify: whether every file is still as recorded; None without verify."""
        if not self.verified:
            return None
        return not any(node.status in FAILED for node in self.nodes.values())

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "root": self.root, "verified": self.verified, "passed": self.passed,
                "summary": self.summary, "nodes": [asdict(node) for node in self.nodes.values()],
                "edges": [asdict(edge) for edge in self.edges]}


def build_lineage(target: str | Path, *, search: Iterable[str | Path] = (), verify: bool = False) -> Lineage:
    """The lineage of `target` (see the module docstring); a one-line HoningError when the target is not a
    model, run, data file or registry version. Missing or damaged records upstream become nodes, never errors."""
    walk = _Walk()
    for root in [Path("runs"), *map(Path, search)]:
        if root != Path("runs") and not root.is_dir():
            raise HoningError(f"search: {root} is not a directory; give directories that hold run directories")
        walk.index.scan(root)
    root = walk.start(str(target))
    walk.run()
    graph = Lineage(str(target), root, walk.nodes, walk.edges, verified=verify)
    if verify:
        for node in graph.nodes.values():
            _verify(node)
    return graph


# --------------------------------------------------------------------------- the walk


@dataclass
class _Unmatched:
    """A file whose producer was not found yet, to try again once more runs are indexed."""

    node: str
    consumer: RunRecord | None
    path: Path
    sha: str | None
    version: int


class _Walk:
    def __init__(self) -> None:
        self.index = RunIndex()
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        self.queue: list[RunRecord] = []
        self.unmatched: list[_Unmatched] = []

    # ----------------------------------------------------------------- the target

    def start(self, target: str) -> str:
        if target.startswith("registry:"):
            return self._registry_target(target)
        path = Path(target).expanduser()
        if not path.exists():
            raise HoningError(f"{target} does not exist; give a model (a run's adapter/ or model/), a run directory, "
                              "a data file, or registry:NAME@VERSION")
        path = path.resolve()
        if path.name == RUN_FILE and path.is_file():
            path = path.parent
        if path.is_dir() and (path / RUN_FILE).is_file():
            run = read_run(path)
            if (path / "config.json").is_file():  # a merged model directory is its own run directory
                return self._model_node(path, made_by=run).id
            for role, output, _ in run.outputs():  # its models, with the weights hashes training recorded
                if role in OUTPUT_MODEL_ROLES and output != path:
                    self._model_node(output, made_by=run, hashed_as="weights")
            return self._run_node(run).id
        if path.is_dir() and _looks_like_model(path):
            enclosing = enclosing_run_dir(path.parent)
            return self._model_node(path, made_by=read_run(enclosing) if enclosing else None).id
        if path.is_dir() and not self._is_recorded_data_dir(path):
            raise HoningError(f"{target} is a directory but neither a run directory (no {RUN_FILE}) nor a model "
                              "(no config.json, adapter_config.json or weights); give a run's adapter/ or model/, a run "
                              "directory, or a data file")
        node = self._file_node(path, None, hashed_as="file")
        self._link_producer(node, None, path, tree_sha256(path))
        return node.id

    def _registry_target(self, ref: str) -> str:
        version = _registry_version(ref)
        model_path = Path(version.model_path).expanduser().resolve()
        run, problem = self._registered_run(version)
        node = self._model_node(model_path, made_by=run, sha=version.weights_sha256, hashed_as="weights",
                                role=version.kind)
        node.details.update({"registry": f"{version.name}@{version.version}", "aliases": list(version.aliases)})
        if problem:  # the run directory holds a record that is not the registered one
            run_node = self.nodes[run.node_id]
            run_node.status = problem.pop("status")
            run_node.details.update(problem)
        return node.id

    def _registered_run(self, version: Version) -> tuple[RunRecord, dict[str, Any]]:
        """The registered run: its run.json on disk when that is the registered run's record, else the registry's
        copy (the directory is gone, its record is damaged, or it now holds another run's record), with what is
        wrong with the record on disk (its status, why, and the run id it holds)."""
        run_dir = Path(version.run_dir).expanduser().resolve()
        registered_id = version.run_id or version.record.get("run_id")
        problem: dict[str, Any] = {}
        if (run_dir / RUN_FILE).is_file():
            try:
                on_disk = read_run(run_dir)
            except HoningError as err:
                problem = {"status": "damaged", "why": f"{err}; the registry's copy is walked"}
            else:
                if not (registered_id and on_disk.run_id and on_disk.run_id != registered_id):
                    return on_disk, {}
                problem = {"status": "changed", "on_disk_run_id": on_disk.run_id,
                           "why": f"{run_dir / RUN_FILE} is now the record of run {on_disk.run_id}, not of the "
                                  f"registered run {registered_id}; the registry's copy is walked"}
                self.index.runs.pop(run_dir, None)  # the copy answers for this directory, not the record there
        return RunRecord(run_dir, version.record, working_dir(run_dir, version.record), from_registry=True), problem

    def _is_recorded_data_dir(self, path: Path) -> bool:
        """A data directory some indexed run wrote (or wrote into), or read."""
        return any(p.is_relative_to(path) for p in self.index.by_path) or any(
            run.read(path, any_hash=True) for run in self.index.runs.values())

    # ----------------------------------------------------------------- expanding runs

    def run(self) -> None:
        """Expand runs until none is left, trying unmatched files again whenever more runs were indexed."""
        while True:
            while self.queue:
                self._expand(self.queue.pop(0))
            retry = [u for u in self.unmatched if u.version < self.index.version]
            if not retry:
                return
            self.unmatched = [u for u in self.unmatched if u not in retry]
            for item in retry:
                self._link_producer(self.nodes[item.node], item.consumer, item.path, item.sha)

    def _expand(self, run: RunRecord) -> None:
        reached: set[str] = set()
        for entry in run.inputs():
            role = str(entry.get("role") or "input")
            if role in MODEL_ROLES or role.startswith("model_"):
                reached |= self._model_input(run, role, entry)
            else:
                self._data_input(run, role, entry)
        parent = run.record.get("parent")
        if isinstance(parent, dict) and parent.get("dir"):
            node = self._run_at(Path(parent["dir"]), parent.get("run_id"), parent.get("stage"))
            if node.id not in reached and node.id != run.node_id:
                self._edge(run.node_id, node.id, "parent")

    def _data_input(self, run: RunRecord, role: str, entry: dict[str, Any]) -> None:
        text, sha = entry["path"], entry.get("sha256")
        if _is_external(text, sha, entry.get("kind")):
            self._edge(run.node_id, self._external(text).id, role)
            return
        path = run.resolve(text)
        known = _node_id("file", path, sha) in self.nodes
        node = self._file_node(path, sha, hashed_as="data" if role.startswith("data_") else "file")
        self._edge(run.node_id, node.id, role)
        if not known:
            self._link_producer(node, run, path, sha)

    def _model_input(self, run: RunRecord, role: str, entry: dict[str, Any]) -> set[str]:
        """The model node(s) of a model input, linked to the runs that made them; the ids of those runs."""
        text, sha = entry["path"], entry.get("sha256")
        if _is_external(text, sha, entry.get("kind")):
            self._edge(run.node_id, self._external(text).id, role)
            return set()
        hashed_as = "fingerprint" if run.record.get("stage") in FINGERPRINT_STAGES else (
            "weights" if role == "adapter" else "model")
        reached = set()
        adapter = entry.get("adapter") if role == "base_model" else None
        if isinstance(adapter, str) and adapter:  # a run's adapter over these base weights
            made_by = self._run_for(run.resolve(adapter), entry.get("run"), run)
            node = self._model_node(run.resolve(adapter), made_by=made_by, sha=entry.get("adapter_sha256"),
                                    hashed_as="weights")
            self._edge(run.node_id, node.id, role)
            reached |= {e.upstream for e in self.edges if e.downstream == node.id}
            role = f"{role} (base weights)"
        path = run.resolve(text)
        node = self._model_node(path, made_by=self._run_for(path, None, run), sha=sha, hashed_as=hashed_as)
        self._edge(run.node_id, node.id, role)
        return reached | {e.upstream for e in self.edges if e.downstream == node.id}

    def _run_for(self, path: Path, recorded_run: Any, consumer: RunRecord) -> RunRecord | Node | None:
        """The run that made a model directory: the one the record names, else the one it lies in."""
        if isinstance(recorded_run, str) and recorded_run:
            directory = consumer.resolve(recorded_run)
        else:
            directory = enclosing_run_dir(path)
            if directory is None or directory == consumer.dir:
                return None
        return self.index.add(directory) or self._run_at(directory, None, None)

    # ----------------------------------------------------------------- producers of files

    def _link_producer(self, node: Node, consumer: RunRecord | None, path: Path, sha: str | None) -> None:
        producers = self._producers(consumer, path, sha)
        if not producers:
            self.unmatched.append(_Unmatched(node.id, consumer, path, sha, self.index.version))
            return
        for producer, role, matched_by, out_sha in producers:
            if node.sha256 is None and out_sha and len(producers) == 1:
                node.sha256 = out_sha
            self._edge(node.id, self._run_node(producer).id, role, matched_by)

    def _producers(self, consumer: RunRecord | None, path: Path,
                   sha: str | None) -> list[tuple[RunRecord, str, str, str | None]]:
        """(run, output role, how it matched, the output's recorded sha256) of the run(s) that wrote `path`.
        Without a consumer (the target file itself) the path may have changed since: a path match needs no
        agreeing hash then."""
        def fits(run: RunRecord) -> bool:
            if consumer is None:
                return True
            if run.dir == consumer.dir or (run.run_id and run.run_id == consumer.run_id):  # itself, or a copy of it
                return False
            before, after = run.started, consumer.started
            return before is None or after is None or before <= after

        by_sha = [(run, role, out) for run, role, out in self.index.by_sha.get(sha, []) if sha != EMPTY_SHA
                  and fits(run) and (out == path or not run.read(path, sha))] if sha else []
        if by_sha:
            run, role, _ = max(by_sha, key=lambda c: (c[2] == path, c[0].started or _EPOCH))
            return [(run, role, "sha256", sha)]
        by_path = [(run, role, out_sha) for run, role, out_sha in self.index.by_path.get(path, [])
                   if fits(run) and (consumer is None or out_sha is None or sha is None or out_sha == sha)]
        if by_path:
            run, role, out_sha = max(by_path, key=lambda c: c[0].started or _EPOCH)
            return [(run, role, "path", out_sha)]
        enclosing = enclosing_run_dir(path)
        run = self.index.add(enclosing) if enclosing is not None else None
        if run is not None and fits(run):
            return [(run, run.output_role(path) or "in_run_dir", "run_dir", None)]
        inside = {run.dir: (run, role, "contains", None) for out, found in self.index.by_path.items()
                  if out != path and out.is_relative_to(path) for run, role, _ in found if fits(run)}
        return list(inside.values())

    # ----------------------------------------------------------------- nodes and edges

    def _edge(self, downstream: str, upstream: str, role: str, matched_by: str | None = None) -> None:
        edge = Edge(downstream, upstream, role, matched_by)
        if edge not in self.edges:
            self.edges.append(edge)

    def _add(self, node: Node) -> Node:
        return self.nodes.setdefault(node.id, node)

    def _run_node(self, run: RunRecord) -> Node:
        if run.node_id in self.nodes:
            return self.nodes[run.node_id]
        record = run.record
        node = self._add(Node(run.node_id, "run", run.run_id or run.dir.name, path=str(run.dir),
                              status="missing" if run.from_registry else "present", stage=record.get("stage"),
                              run_id=run.run_id, details=_run_details(record, run.from_registry)))
        if run.dir not in self.index.runs:
            self.index.put(run)
        self.index.scan(run.dir.parent)  # its siblings may have made its inputs
        self.queue.append(run)
        return node

    def _run_at(self, directory: Path, run_id: str | None, stage: str | None) -> Node:
        """The run in `directory` (a node marked missing or damaged when it cannot be read)."""
        directory = directory.resolve()
        if (directory / RUN_FILE).is_file():
            try:
                return self._run_node(self.index.runs.get(directory) or read_run(directory))
            except HoningError as err:
                return self._add(Node(f"run:{directory}", "run", directory.name, path=str(directory),
                                      status="damaged", details={"error": str(err)}))
        return self._missing_run(directory, run_id, stage)

    def _missing_run(self, directory: Path, run_id: str | None, stage: str | None) -> Node:
        """A run directory that is gone: one node, however often (and by dir or by run id) it is reached."""
        known = next((n for n in self.nodes.values() if n.kind == "run" and n.status == "missing"
                      and (n.path == str(directory) or (run_id and n.run_id == run_id))), None)
        if known is None:
            return self._add(Node(f"run:{run_id or directory}", "run", run_id or directory.name, path=str(directory),
                                  status="missing", stage=stage, run_id=run_id))
        known.run_id, known.stage = known.run_id or run_id, known.stage or stage
        return known

    def _model_node(self, path: Path, *, made_by: RunRecord | Node | None, sha: str | None = None,
                    hashed_as: str = "weights", role: str | None = None) -> Node:
        if sha is None and isinstance(made_by, RunRecord):  # training runs record their outputs' weights hashes
            hashes = made_by.record.get("output_sha256")
            sha = hashes.get(made_by.output_role(path) or "") if isinstance(hashes, dict) else None
        node_id = _node_id("model", path, sha)
        if node_id in self.nodes:
            return self.nodes[node_id]
        label = f"{path.parent.name}/{path.name}" if path.name in ("adapter", "model", "reward_model") else path.name
        node = self._add(Node(node_id, "model", label, path=str(path), sha256=sha,
                              status="present" if path.exists() else "missing", hashed_as=hashed_as))
        if isinstance(made_by, RunRecord):
            role = made_by.output_role(path) or role or "made_by"
            self._edge(node.id, self._run_node(made_by).id, role, "run_dir")
        elif isinstance(made_by, Node):
            self._edge(node.id, made_by.id, role or "made_by", "run_dir")
        return node

    def _file_node(self, path: Path, sha: str | None, *, hashed_as: str) -> Node:
        return self._add(Node(_node_id("file", path, sha), "file", path.name, path=str(path), sha256=sha,
                              status="present" if path.exists() else "missing", hashed_as=hashed_as))

    def _external(self, text: str) -> Node:
        return self._add(Node(f"external:{text}", "external", text, status="external"))


def _node_id(kind: str, path: Path, sha: str | None) -> str:
    """A file or model is its path and its recorded content: the same path read with other bytes is another node."""
    return f"{kind}:{path}" + (f"#{sha[:12]}" if sha else "")


def _run_details(record: dict[str, Any], from_registry: bool) -> dict[str, Any]:
    code = record.get("code") if isinstance(record.get("code"), dict) else {}
    details = {key: record.get(key) for key in ("status", "started", "finished", "command") if record.get(key)}
    if code.get("git_commit"):
        details["git_commit"] = code["git_commit"] + ("-dirty" if code.get("git_dirty") else "")
    if from_registry:
        details["record_from"] = "registry"
    return details


def _looks_like_model(path: Path) -> bool:
    return any((path / name).is_file() for name in ("config.json", "adapter_config.json")) or any(
        next(path.glob(pattern), None) for pattern in ("*.safetensors", "*.bin", "*.gguf"))


def _is_external(text: str, sha: str | None, kind: Any) -> bool:
    """An input that names no file here: an endpoint URL, builtin:/lm-eval: names, the embedded default's
    placeholder, a model built from a config, a scripted model's name."""
    if kind in ("scratch", "endpoint") or text in ("embedded default", "scratch") or "://" in text or _SCHEME.match(text):
        return True
    return sha is None and "/" not in text and "." not in text and not Path(text).exists()


def _registry_version(ref: str) -> Version:
    """The registered version as the registry holds it, without resolve_ref's checks that its files are still there
    and unchanged: lineage answers for a version whose files were moved or deleted, and --verify says what changed.
    A one-line HoningError for a bad reference or an unknown registry, name, version or alias."""
    name, which = parse_ref(ref)
    with Registry(default_path(), create=False) as registry:
        return registry.get(name, which)


# --------------------------------------------------------------------------- verify


def _verify(node: Node) -> None:
    """Re-hash what is on disk with the function that made the recorded hash."""
    if node.kind == "run":
        node.status = "ok" if node.status == "present" else node.status
        return
    if node.kind == "external":
        return
    if not node.path or not Path(node.path).exists():
        node.status = "missing"
        return
    if node.hashed_as == "fingerprint":
        node.status = "unchecked"
        node.details["why"] = "the record holds a fingerprint of the weights and loading settings, not a content hash"
        return
    try:
        node.actual_sha256 = _hash(Path(node.path), node.hashed_as)
    except (OSError, HoningError) as err:
        node.status = "changed"
        node.details["why"] = f"cannot be hashed now: {err}"
        return
    if node.sha256 is None:
        node.status = "unchecked"
        node.details["why"] = "no record holds a hash of it"
    else:
        node.status = "ok" if node.actual_sha256 == node.sha256 else "changed"


def _hash(path: Path, hashed_as: str | None) -> str | None:
    if hashed_as == "data":
        from honing.data.cache import path_sha256

        return path_sha256(path)
    if hashed_as in ("weights", "model"):
        from honing.models.source import weight_files, weights_sha256

        if path.is_file():
            return file_sha256(path)
        if hashed_as == "model" and (path / RUN_FILE).is_file():  # a run directory named as the model
            from honing.config import ModelConfig
            from honing.models.source import resolve_model_source, source_sha256

            source = resolve_model_source(ModelConfig(path=str(path)))
            return source_sha256(source.get("base") or source)
        return weights_sha256(weight_files(path)) or None
    return tree_sha256(path)
