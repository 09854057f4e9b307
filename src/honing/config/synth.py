"""Config of `honing data synth`: synthetic instruction data from a teacher model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.evaluation import JudgeConfig
from honing.config.model import ChatModelConfig
from honing.config.sampling import SamplingConfig


TeacherConfig = ChatModelConfig
"""The model that writes the data: any chat model honing talks to (a local model or an OpenAI-compatible endpoint)."""


class SynthConfig(StrictModel):
    """`honing data synth`: new instruction data from a teacher, by self-instruct (seed tasks →
    new instructions → inputs and outputs, filtered) or by distillation (the teacher's answer to
    every prompt of a file). Every record carries its provenance; an interrupted run resumes."""

    method: Literal["self_instruct", "distill"] = "self_instruct"
    """self_instruct: grow new tasks from `seeds` (Wang et al. 2022); distill: answer every prompt of `prompts`."""
    seeds: str | None = None
    """Seed tasks for self_instruct: a .jsonl of Alpaca records (instruction, input, output)."""
    prompts: str | None = None
    """Prompts for distill: .jsonl with `prompt`, `messages` or `instruction` per line, or .txt with one prompt per line."""
    output: str = "data/synth.jsonl"
    """Output .jsonl, written atomically once the run completes (records with `_provenance`)."""
    run_dir: str | None = None
    """Run directory (synth.jsonl grows there batch by batch, with state.json); default runs/synth-<time>."""
    resume: bool = False
    """Continue the run in `run_dir`: nothing kept is regenerated or lost, and filters see all of it."""
    teacher: TeacherConfig = TeacherConfig()
    """The model that writes the data: teacher.path (local) or teacher.endpoint + teacher.endpoint_model (HTTP)."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=256)
    """How the teacher samples; temperature > 0 for diverse tasks. The seed is re-derived per batch from `seed`."""
    system_prompt: str | None = None
    """System message for distill prompts that have none."""
    num_instructions: int = Field(100, ge=1)
    """self_instruct: stop once this many new tasks are kept (seeds not counted)."""
    max_rounds: int = Field(100, ge=1)
    """self_instruct: stop after this many rounds even if fewer tasks were kept."""
    in_context: int = Field(3, ge=1)
    """self_instruct: example tasks shown to the teacher per request, drawn from seeds and kept tasks."""
    batch_size: int = Field(8, ge=1)
    """Requests per round (self_instruct: new instructions asked for) and per saved batch (distill)."""
    max_rouge_l: float = Field(0.7, gt=0.0, le=1.0)
    """self_instruct: drop a new instruction whose ROUGE-L F1 with any kept one (seeds included) exceeds this (rule duplicate)."""
    min_chars: int = Field(8, ge=0)
    """self_instruct: drop instructions shorter than this many characters (rule too_short)."""
    max_chars: int = Field(500, ge=1)
    """self_instruct: drop instructions longer than this many characters (rule too_long)."""
    max_output_chars: int = Field(4000, ge=1)
    """self_instruct: drop tasks whose output is longer than this many characters (rule output_too_long)."""
    judge: JudgeConfig | None = None
    """self_instruct: optional judge that grades each new task's output on a rubric (needs min_judge_score)."""
    rubric: str | None = None
    """Rubric the judge grades against; default: honing's general correctness rubric."""
    min_judge_score: float | None = Field(None, ge=0.0, le=1.0)
    """Drop tasks the judge grades below this share of the scale ((score − 1) / 9; 0.5 ≈ 5.5 of 10) (rule judge_low)."""
    format: Literal["alpaca", "chat"] = "alpaca"
    """Record format of the output: alpaca (instruction/input/output) or chat (messages)."""
    seed: int = 0
    """Seed for choosing in-context examples and for the teacher's sampling; a rerun with the same seed reproduces."""

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if self.method == "self_instruct" and not self.seeds:
            raise ValueError("method=self_instruct needs seeds: a .jsonl of seed tasks (e.g. seeds=examples/data/synth_seeds.jsonl)")
        if self.method == "distill" and not self.prompts:
            raise ValueError("method=distill needs prompts: a .jsonl or .txt prompt file (e.g. prompts=prompts.txt)")
        if self.min_judge_score is not None and self.judge is None:
            raise ValueError("min_judge_score needs a judge (set judge.path or judge.endpoint), or remove min_judge_score")
        if self.judge is not None and self.min_judge_score is None:
            raise ValueError("a judge needs min_judge_score (e.g. min_judge_score=0.5), or remove judge")
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is larger than max_chars ({self.max_chars})")
        if self.resume and not self.run_dir:
            raise ValueError("resume=true needs run_dir: the directory of the run to continue")
        if not self.output.endswith(".jsonl"):
            raise ValueError(f"output {self.output} must be a .jsonl file")
        return self
