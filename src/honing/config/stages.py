"""The one list of commands: name, summary, config class, and the function that runs it.

The CLI builds its commands and their help from this list, so a new stage is added here and
nowhere else. Functions are named as "module:function" and imported only when the command runs,
which keeps `honing --help` free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from honing.config.alignment import DPOConfig, LabelConfig, RewardConfig, ScoreConfig
from honing.config.audit import AuditConfig
from honing.config.base import StrictModel
from honing.config.evaluation import EvalConfig
from honing.config.export import ExportConfig
from honing.config.inference import ChatConfig, GenerateConfig, InspectConfig, MergeConfig
from honing.config.ladder import LadderConfig
from honing.config.lineage import LineageConfig
from honing.config.monitor import MonitorConfig, MonitorExportConfig
from honing.config.pipeline import PipelineConfig
from honing.config.rag import RagAskConfig, RagEvalConfig, RagIndexConfig
from honing.config.redteam import ConstituteConfig, RedteamConfig
from honing.config.rl import RLConfig
from honing.config.serve import ServeConfig
from honing.config.synth import SynthConfig
from honing.config.training import PretrainConfig, QuickstartConfig, SFTConfig
from honing.config.workbench import (DataCardConfig, DataCleanConfig, DataConvertConfig, DataDedupConfig,
                                     DataMixConfig, DataPIIConfig, DataSplitConfig, DataStatsConfig,
                                     DataValidateConfig)
from honing.errors import EXIT_GATE_FAILED


@dataclass(frozen=True)
class Flag:
    """A command-line option that sets one config key: `--gate` sets gate.enabled=true; a valued one
    (`--fail-above 0.2`) sets the key to the value given."""

    option: str
    key: str
    help: str
    value: str | None = None
    """A boolean flag sets the key to this (default "true"); with metavar set, the option takes a value."""
    metavar: str | None = None
    kind: type = str

    @property
    def param(self) -> str:
        return self.option.lstrip("-").replace("-", "_")

    def override(self, given) -> str | None:
        """The key=value this flag adds, for its parsed value (None: not given)."""
        if self.metavar is None:
            return f"{self.key}={self.value or 'true'}" if given else None
        return None if given is None else f"{self.key}={given!r}" if self.kind is float else f"{self.key}={given}"


@dataclass(frozen=True)
class Stage:
    """A command: `honing <name>` (or `honing data <name>` when group is "data")."""

    name: str
    summary: str
    config: type[StrictModel]
    runner: str
    """"module:function", called with the config (and resume=, for training stages)."""
    group: str = ""
    trains: bool = False
    """Takes --resume RUN_DIR."""
    subject: str | None = None
    """The config key a positional file sets (`honing inspect FILE` sets data.train); null: none."""
    subject_many: bool = False
    """Several positional files (data mix A B ...: one source each, named by file stem)."""
    subject_list: bool = False
    """Several positional files, as one list (rag index A B ...)."""
    subject_text: bool = False
    """The one positional argument is text taken as it is, never read as YAML (rag ask "QUESTION")."""
    output: str | None = None
    """The config key that -o/--output sets; null: the command has no -o."""
    flags: tuple[Flag, ...] = ()
    """Options that set config keys (--gate, --verify, --from STEP)."""

    @property
    def command(self) -> str:
        return f"honing {self.group + ' ' if self.group else ''}{self.name}"

    @property
    def example(self) -> str:
        folder = f"{self.group}_{self.name}" if self.group else self.name
        return f"{self.command} examples/{folder}/<config>.yaml key=value"

    def subject_overrides(self, files: list[str]) -> list[str]:
        """key=value overrides for the positional files."""
        from honing.errors import HoningError

        import json

        if self.subject_list:
            return [f"{self.subject}={json.dumps(files)}"]
        if not self.subject_many:
            if self.subject_text:
                return [f"{self.subject}={json.dumps(' '.join(files))}"]
            if len(files) > 1:
                raise HoningError(f"`{self.command}` takes one file, got {len(files)}: {', '.join(files)}")
            return [f"{self.subject}={files[0]}"]
        names: dict[str, str] = {}
        for path in files:
            stem = path.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0] or "source"
            name, n = stem, 2
            while name in names:
                name, n = f"{stem}_{n}", n + 1
            names[name] = path
        return [f"{self.subject}.{name}={path}" for name, path in names.items()]

    def run(self, cfg: StrictModel, **kwargs):
        import importlib

        module, function = self.runner.split(":")
        return getattr(importlib.import_module(module), function)(cfg, **kwargs)


def _stage(name: str, config: type[StrictModel], summary: str, *, trains: bool = False, **files) -> Stage:
    return Stage(name, summary, config, f"honing.stages.{name}:run", trains=trains, **files)


def _data(name: str, config: type[StrictModel], summary: str, runner: str | None = None, *,
          subject: str | None = "input", output: str | None = "output", **files) -> Stage:
    return Stage(name, summary, config, runner or f"honing.workbench.{name}:run", group="data", subject=subject,
                 output=output, **files)


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    _stage("pretrain", PretrainConfig, "Pre-train a causal LM on raw text (a new model from a config, or continue one).",
           trains=True),
    _stage("sft", SFTConfig, "Supervised fine-tuning (full, LoRA, DoRA, QLoRA) on instruction or chat data.", trains=True),
    _stage("generate", GenerateConfig, "Answer every prompt of a file, writing a JSONL of responses.",
           subject="prompts", output="output"),
    _stage("chat", ChatConfig, "Chat with a model (base, fine-tuned, or base + adapter) in the terminal."),
    _stage("merge", MergeConfig, "Fold a LoRA/DoRA adapter into its base model and save a plain HF model.",
           subject="model.adapter", output="output"),
    _stage("export", ExportConfig, "Write a model (adapter folded in) for serving elsewhere: a merged HF directory "
           "(vLLM, TGI) and/or a GGUF with an Ollama Modelfile.", subject="model.path", output="output"),
    _stage("inspect", InspectConfig, "Show a data file's format, counts, token lengths and trained-vs-masked tokens.",
           subject="data.train"),
    _stage("quickstart", QuickstartConfig,
           "Fine-tune the embedded model on the bundled task and show before/after on held-out data."),
    _stage("eval", EvalConfig,
           "Evaluate models on tasks with bootstrap intervals; one Markdown + HTML report; --gate fails on regressions.",
           flags=(Flag("--gate", "gate.enabled", f"Exit with code {EXIT_GATE_FAILED} when a candidate regresses on a "
                       "regression task or misses a task's min threshold."),)),
    _stage("dpo", DPOConfig,
           "Align a model with preference pairs: DPO, IPO, SimPO or ORPO (LoRA or full fine-tuning).", trains=True),
    _stage("label", LabelConfig, "Collect human preferences in the terminal: a prompt, two answers, "
           "keys a / b / t(ie) / s(kip) / u(ndo) / q(uit)."),
    _stage("reward", RewardConfig, "Train a reward model (a scalar head on the model) on preference pairs with the "
           "Bradley-Terry loss.", trains=True),
    _stage("score", ScoreConfig, "Score answers with a reward model: each record plus `score`; with a baseline, the win rate."),
    _stage("rl", RLConfig, "Online RL from prompts and rewards (verifiers, reward model, judge): GRPO or PPO, with a KL "
           "to the start.", trains=True),
    _stage("redteam", RedteamConfig, "Attack a model with a probe suite; attack success rate per category and mutator; "
           "--fail-above gates.",
           flags=(Flag("--fail-above", "fail_above", f"Exit with code {EXIT_GATE_FAILED} when the attack success rate "
                       "(0-1, all attack categories) is above RATE.", metavar="RATE", kind=float),)),
    _stage("constitute", ConstituteConfig, "Critique and revise answers against a constitution (default: a redteam "
           "run's failures): SFT data and preference pairs."),
    _stage("lineage", LineageConfig, "Trace a model, run or data file back to the raw bytes that made it, from the run "
           "records: a tree, JSON or Graphviz DOT.", subject="target", output="output",
           flags=(Flag("--verify", "verify", f"Re-hash every file of the graph still on disk; exit with code "
                       f"{EXIT_GATE_FAILED} when one changed or is missing."),
                  Flag("--format", "format", "tree (default), json or dot.", metavar="FORMAT"))),
    _stage("audit", AuditConfig, "One Markdown + HTML audit report of a registered version (model card, data card, "
           "evaluations, red-team scan, lineage, hashes checked), from the records alone.", subject="target",
           output="output", flags=(Flag("--no-verify", "verify", "Report the recorded hashes without re-hashing the "
                                        "files.", value="false"),)),
    _stage("serve", ServeConfig, "Serve models and adapters over an OpenAI-compatible API (continuous batching, API "
           "keys, limits, a PII-redacted request log, /metrics, feedback).",
           flags=(Flag("--port", "port", "Port to listen on (default 8000; 0: a free one).", metavar="PORT", kind=int),
                  Flag("--host", "host", "Address to listen on (default 127.0.0.1; any other needs API keys).",
                       metavar="HOST"))),
    _stage("ladder", LadderConfig, "Compare zero-shot, few-shot, RAG, fine-tuned and fine-tuned + RAG on one held-out "
           "set: quality with intervals, cost per rung, and the cheapest rung not significantly worse than the best."),
    _stage("pipeline", PipelineConfig, "Run named steps (any honing command, or a registry gate) in order; a rerun "
           "skips the steps whose command, config and input files are unchanged.",
           flags=(Flag("--from", "from_step", "Run this step and every later one even when unchanged.",
                       metavar="STEP"),)),
    _stage("monitor", MonitorConfig, "Report the request log of `honing serve` per model version: traffic, latency, "
           "errors, refusals, feedback, drift from the training data; shadow=true re-runs the gate tasks.",
           output="output"),
)}
"""`honing <name>`."""

DATA_STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    _data("clean", DataCleanConfig, "Normalise text and remove low-quality records (Gopher/C4 rules), counted by rule."),
    _data("pii", DataPIIConfig,
          "Redact, drop or report emails, phones, cards, IBANs, IPs, national ids, credentials and secrets."),
    _data("dedup", DataDedupConfig, "Remove exact and MinHash near-duplicates, across splits and against evaluation files."),
    _data("convert", DataConvertConfig, "Convert between Alpaca, ShareGPT, OpenAI messages, preference pairs and plain text."),
    _data("split", DataSplitConfig, "Split deterministically into train/validation/test, optionally stratified by a field."),
    _data("mix", DataMixConfig, "Mix datasets by weights or counts with provenance, decontaminated against evaluation files.",
          subject="sources", subject_many=True),
    _data("validate", DataValidateConfig, "Check that every record parses and normalises; list the bad ones with file:line.",
          output=None),
    _data("stats", DataStatsConfig, "Counts, length histograms, duplicate share, PII by type and a field's distribution.",
          output=None),
    _data("card", DataCardConfig, "Write a Markdown data card from the run directories of earlier data commands.",
          subject=None),
    _data("synth", SynthConfig, "Make instruction data with a teacher model: self-instruct from seed tasks, or "
          "distillation of a prompt file.", runner="honing.synth:run", subject=None),
)}
"""`honing data <name>`."""

MONITOR_STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("export", "Turn the feedback in the request log into training data: sft.jsonl from corrections, "
          "preferences.jsonl from choices, corrections and ratings.", MonitorExportConfig,
          "honing.stages.monitor:export", group="monitor", output="run_dir"),
)}
"""`honing monitor <name>` (plain `honing monitor` is the report, STAGES["monitor"])."""

RAG_STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("index", "Index documents (.md, .txt, .html, .jsonl, .pdf) for retrieval: token chunks, embeddings and BM25; "
          "a rerun embeds only what changed.", RagIndexConfig, "honing.stages.rag:index", group="rag",
          subject="docs", subject_list=True, flags=(Flag("--index", "index", "The index directory.", metavar="DIR"),)),
    Stage("ask", "Answer a question from an index: hybrid search, then the model answers citing chunk ids; prints the "
          "answer, then its sources.", RagAskConfig, "honing.stages.rag:ask", group="rag", subject="question",
          subject_text=True, flags=(Flag("--index", "index", "The index directory.", metavar="DIR"),
                                    Flag("--no-answer", "answer", "Print only the retrieved chunks.", value="false"))),
    Stage("eval", "Score retrieval on a QA set with gold sources or chunk ids (recall@k, MRR, nDCG@k, per kind, with "
          "bootstrap intervals); --answer also scores the answers: found, citations, groundedness.", RagEvalConfig,
          "honing.stages.rag:evaluate", group="rag", subject="data", output="output",
          flags=(Flag("--index", "index", "The index directory.", metavar="DIR"),
                 Flag("--answer", "answer", "Also have the model answer from the retrieved chunks and score the "
                      "answers."))),
)}
"""`honing rag <name>`."""

GROUPS: dict[str, dict[str, Stage]] = {"data": DATA_STAGES, "monitor": MONITOR_STAGES, "rag": RAG_STAGES}
"""The commands under a group: `honing <group> <name>`."""
