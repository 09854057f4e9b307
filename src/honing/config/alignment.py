"""Configs of preference learning: dpo, reward, score and label."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.data import DataConfig
from honing.config.model import AdapterConfig, ChatModelConfig, ModelConfig, starts_from_trained
from honing.config.output import OutputConfig
from honing.config.sampling import SamplingConfig
from honing.config.train import TrainConfig


class PreferenceObjectiveConfig(StrictModel):
    """The preference objective."""

    loss: Literal["sigmoid", "ipo", "simpo", "orpo"] = "sigmoid"
    """sigmoid: DPO (Rafailov et al. 2023); ipo: IPO (Azar et al. 2023); simpo: SimPO, reference-free with
    length-normalised log-probs (Meng et al. 2024); orpo: ORPO, SFT loss plus an odds-ratio term, reference-free."""
    beta: float = Field(0.1, gt=0)
    """Strength of the pull toward the reference (DPO, IPO), or the reward scale (SimPO)."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """DPO only: the share of pairs assumed mislabelled (conservative DPO)."""
    simpo_gamma: float = Field(0.5, ge=0.0)
    """SimPO's target reward margin."""
    orpo_lambda: float = Field(0.1, gt=0)
    """ORPO's weight on the odds-ratio term."""
    ipo_normalize: Literal["mean", "sum"] = "mean"
    """IPO only: mean divides each answer's log-ratio to the reference by its token count before the
    (x − 1/(2β))² loss, as TRL does and as the IPO authors confirmed; sum uses the summed log-ratios (honing
    before this option). Default mean: a β tuned in TRL or taken from the IPO literature means the same here,
    and the target margin 1/(2β) does not change with answer length."""
    precompute_reference: bool | None = None
    """DPO/IPO: score every train and validation pair with the starting model once, before training (eval
    mode), save the scores in the run directory (reference_logps.safetensors, its hash in run.json; --resume
    reloads them) and train against them: no reference pass per step, no second copy of the model.
    false: with an adapter the reference is the adapter switched off at each step; with full fine-tuning a
    second, frozen copy of the starting model is loaded. null: true with adapter.method=full, else false."""


class PairsStageConfig(StrictModel):
    """What dpo and reward share: a trained model to start from, how it is trained, and preference pairs."""

    stage: ClassVar[str]
    model: ModelConfig = ModelConfig()
    adapter: AdapterConfig = AdapterConfig()
    data: DataConfig = DataConfig(format="preference", max_length=512)

    @model_validator(mode="after")
    def _pairs_stage(self) -> PairsStageConfig:
        if not self.data.train:
            raise ValueError("data.train is required: a file of prompt/chosen/rejected records")
        if self.data.format not in ("preference", "auto"):
            raise ValueError(f"{self.stage} trains on preference data (prompt, chosen, rejected), not "
                             f"data.format={self.data.format}")
        if self.data.packing:
            raise ValueError(f"{self.stage} does not pack: each pair is scored as two padded rows (set data.packing=false)")
        starts_from_trained(self.model, self.stage)
        return self


class DPOConfig(PairsStageConfig):
    """`honing dpo`: align a model with preference pairs (prompt, chosen, rejected) by DPO, IPO, SimPO or ORPO.
    With LoRA the reference is the starting model itself with the adapter switched off (no second copy); with
    full fine-tuning its scores are precomputed before the first update (preference.precompute_reference)."""

    stage = "dpo"
    train: TrainConfig = TrainConfig(lr=5e-5, micro_batch_size=2, eval_every=25)
    preference: PreferenceObjectiveConfig = PreferenceObjectiveConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        if self.preference.precompute_reference and self.preference.loss in ("simpo", "orpo"):
            raise ValueError(f"preference.loss={self.preference.loss} has no reference model: "
                             "preference.precompute_reference applies to sigmoid (DPO) and ipo only")
        return self


class RewardObjectiveConfig(StrictModel):
    """The Bradley–Terry objective: −log σ(s_chosen − s_rejected − margin) per pair."""

    margin: float = 0.0
    """A margin every pair must clear (0: plain Bradley–Terry); added to margin_field's value when both are set."""
    margin_field: str | None = None
    """A record key holding a per-pair margin (e.g. the gap between two ratings, as in Llama 2's reward
    models); a record without a number there is a bad record (data.on_bad_record)."""


class RewardConfig(PairsStageConfig):
    """`honing reward`: train a reward model (the model's backbone plus a scalar head read at the last real
    token) on preference pairs with the Bradley–Terry loss. The head is always trained; adapter.method picks
    how the backbone is (full, or a LoRA adapter). Saves reward_model/ in the run directory, loadable by
    `honing score`, the RL stage and `load_reward_model` (output.save does not apply)."""

    stage = "reward"
    train: TrainConfig = TrainConfig(lr=1e-4, micro_batch_size=4, eval_every=25)
    reward: RewardObjectiveConfig = RewardObjectiveConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check(self) -> RewardConfig:
        if self.train.distributed == "fsdp":
            raise ValueError("reward trains with train.distributed=ddp (each process holds the whole model); fsdp is not supported yet")
        if self.output.save != "adapter":
            raise ValueError("output.save does not apply to reward: it always saves reward_model/ (the backbone, "
                             "or its adapter, plus the head)")
        return self


class ScoreConfig(StrictModel):
    """`honing score`: score answers with a reward model trained by `honing reward`, rendered exactly as in its
    training; writes each input record plus `score`."""

    reward_model: str | None = None
    """The reward model: a `honing reward` run directory, or its reward_model/ folder."""
    base_model: str | None = None
    """The base model of a LoRA reward model (an HF directory, a .gguf or a run directory); default: the base it
    recorded, or the embedded default when that directory is gone. Not used by a fully trained reward model."""
    input: str | None = None
    """Records to score (.jsonl/.json/.csv/.parquet): a `honing generate` output (each record plus `response`),
    prompt/response records, or messages records whose last turn is the assistant answer."""
    output: str | None = None
    """Output .jsonl: each input record plus `score` (and `baseline_score` with baseline)."""
    baseline: str | None = None
    """A second file of answers to the same prompts in the same order (e.g. the starting model's, where input
    holds the tuned model's): each record is scored too, and the summary gives the mean of each and the win
    rate of input over baseline (ties count half)."""
    system_prompt: str | None = None
    """System message added to prompts that have none; use the reward run's data.system_prompt."""
    batch_size: int = Field(8, ge=1)
    """Sequences scored together."""
    max_length: int = Field(1024, ge=8)
    """Longest prompt + answer in tokens; longer answers are cut there and scored mid-answer (counted in the log)."""

    @model_validator(mode="after")
    def _check(self) -> ScoreConfig:
        if not self.reward_model or not self.input or not self.output:
            raise ValueError("reward_model, input and output are all required "
                             "(e.g. reward_model=runs/reward-x input=answers.jsonl output=scored.jsonl)")
        return self


class LabelSourceConfig(StrictModel):
    """Where one of the two answers to each prompt comes from: a file of answers, or a model that writes them."""

    name: str | None = None
    """How the answers are named in the preference file (source_chosen, source_rejected); default: the
    responses file, or the model path (+ model.adapter, + seed when both sides sample the same model)."""
    responses: str | None = None
    """A `honing generate` output (.jsonl: each prompt record plus `response`), line i answering prompt i.
    null: generate the answers with `model`."""
    model: ChatModelConfig = ChatModelConfig()
    """The model that answers when `responses` is null (model.path + model.adapter, or model.endpoint;
    default: the embedded model)."""
    seed: int | None = None
    """Sampling seed of this side; null: sampling.seed for first, sampling.seed + 1 for second (so one model
    sampled twice gives two different answers)."""


class LabelConfig(StrictModel):
    """`honing label`: show a prompt and two answers, take a key (a, b, t for tie, s to skip, u to undo, q to quit),
    and append each preference to a {prompt, chosen, rejected} file; a rerun resumes at the first unlabelled item."""

    prompts: str | None = None
    """Prompts: .jsonl with `prompt`, `messages` or `instruction` per line, or .txt with one per line (as for
    `honing generate`); null when both sides are responses files, whose records hold the prompts."""
    first: LabelSourceConfig = LabelSourceConfig()
    """One source of answers."""
    second: LabelSourceConfig = LabelSourceConfig()
    """The other source of answers (which of the two is shown as A is drawn per item)."""
    output: str | None = None
    """The preference file (.jsonl), appended to: prompt, chosen, rejected, source_chosen, source_rejected,
    labeller, labelled_at, item. Every decision (ties and skips too) goes to <output>.decisions.jsonl, and
    generated answers are kept in <output>.responses.json, so a rerun neither asks twice nor regenerates."""
    labeller: str | None = None
    """Who is labelling, recorded on every line; default: the login name."""
    seed: int = 0
    """Seed of the per-item draw of which source is shown as A (recorded with each decision)."""
    system_prompt: str | None = None
    """System message added to prompts that have none, when generating (it is part of the written prompt)."""
    chat_template: bool = True
    """Wrap prompts in the model's chat template when generating (false: plain text completion)."""
    batch_size: int = Field(8, ge=1)
    """Prompts generated together (left-padded)."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.9)
    """How generated answers are sampled (both sides; each side's seed is its own)."""

    @model_validator(mode="after")
    def _check(self) -> LabelConfig:
        if not self.output:
            raise ValueError("output is required: the preference .jsonl to append to (e.g. output=prefs.jsonl)")
        if not self.output.endswith(".jsonl"):
            raise ValueError(f"output must be a .jsonl file, not {self.output}")
        if not self.prompts and not (self.first.responses and self.second.responses):
            raise ValueError("prompts is required unless both first.responses and second.responses are given")
        if self.first.name and self.first.name == self.second.name:
            raise ValueError(f"first.name and second.name are both {self.first.name!r}: give the two sources different names")
        same_model = (not self.first.responses and not self.second.responses and self.first.model == self.second.model)
        if same_model and self.sampling.temperature == 0:
            raise ValueError("first and second are the same model, and greedy decoding (sampling.temperature=0) would "
                             "give it the same answer twice: set sampling.temperature > 0, or a different model or adapter")
        if same_model and self.first.seed is not None and self.first.seed == self.second.seed:
            raise ValueError("first and second sample the same model with the same seed: give them different seeds")
        return self
