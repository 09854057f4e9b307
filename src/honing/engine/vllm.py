"""vLLM as the generation backend, on a CUDA machine where it is installed (generation.backend: vllm or auto).

    VLLMModel(cfg)                 the model cfg names, loaded by vLLM's offline `LLM` (an adapter stays a LoRA)
    .complete(prompts, sampling)   one Completion per prompt, in order (ChatModel.complete)
    .sample(prompt_ids, sampling)  token ids of `samples` answers per tokenised prompt (ChatModel.sample, RL rollouts)

Prompts are rendered and tokenised by honing's tokenizer (the one the torch path loads) and sent as token ids,
so both backends see the same prompt; answers are decoded by the same tokenizer. Every (prompt, sample) is its
own vLLM request with its own seed, by the torch engine's rule (prompt i: seed + i; sample j of prompt i:
seed + i·samples + j); vLLM's automatic prefix caching computes a shared prompt once.

Not here: a policy being trained in memory keeps the torch engine (vLLM holds its own copy of the weights,
which this backend does not sync after an optimiser step), and vLLM's offline API does not stream tokens.

The mapping from honing's settings to vLLM's (sampling_kwargs, engine_kwargs, answer_tokens, ...) is plain
functions over dicts and lists, so it is tested without vLLM. Written against vLLM's V1 engine (0.10 and later);
the arguments used are also accepted by older releases.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from honing.config import ChatModelConfig, GenerationConfig, ModelConfig, SamplingConfig
from honing.errors import HoningError

log = logging.getLogger(__name__)

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The max_lora_rank values every vLLM release since 0.6 accepts (newer ones also take 1)."""
MAX_TEMPERATURE = 2.0
"""vLLM rejects a higher temperature."""
GPU_MEMORY_SHARE = 0.9
"""vLLM's default share of the GPU; less when other models already hold part of it."""


def vllm_unavailable() -> str | None:
    """Why vLLM cannot run here, or None when it can."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "there is no CUDA GPU on this machine"
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "vLLM is not installed (pip install vllm)"
    return None


def vllm_wanted(cfg: ChatModelConfig) -> bool:
    """True when vLLM should answer for `cfg`: only when asked for (generation.backend=vllm), since a model
    vLLM holds has no weights in this process for log-likelihood tasks; where it cannot run that is an error."""
    if cfg.generation.backend != "vllm" or cfg.endpoint:
        return False
    reason = vllm_unavailable()
    if reason:
        raise HoningError(f"generation.backend=vllm: {reason}; use generation.backend=auto, torch or transformers")
    return True


# --------------------------------------------------------------------------- mapping (no vLLM needed)


def request_seeds(base: int, prompts: int, samples: int = 1) -> list[int]:
    """The seed of each (prompt, sample) request, prompt-major: sample j of prompt i gets base + i·samples + j."""
    return [base + i * samples + j for i in range(prompts) for j in range(samples)]


def sampling_kwargs(sampling: SamplingConfig, stop_ids: Sequence[int], seed: int) -> dict[str, Any]:
    """vLLM SamplingParams arguments for one request. Greedy at temperature 0 (top_p, top_k, seed unused);
    top_k=0 (off) is sent as -1, which every vLLM release reads as off."""
    if sampling.temperature > MAX_TEMPERATURE:
        raise HoningError(f"sampling.temperature={sampling.temperature:g}: vLLM accepts at most "
                          f"{MAX_TEMPERATURE:g}; lower it or use generation.backend=torch")
    greedy = sampling.temperature == 0
    return {
        "n": 1,
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": 1.0 if greedy else sampling.top_p,
        "top_k": -1 if greedy or sampling.top_k == 0 else sampling.top_k,
        "repetition_penalty": sampling.repetition_penalty,
        "seed": None if greedy else seed,
        "stop": list(sampling.stop) or None,
        "stop_token_ids": list(stop_ids),
        "skip_special_tokens": True,
    }


def lora_rank(r: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of rank r."""
    for rank in LORA_RANKS:
        if r <= rank:
            return rank
    raise HoningError(f"the adapter's rank r={r} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]}); "
                      "use generation.backend=torch")


def engine_kwargs(model_dir: str, tokenizer_dir: str, dtype: str, generation: GenerationConfig, *,
                  adapter_rank: int | None, gpu_share: float, kv_cache_field: bool) -> dict[str, Any]:
    """vLLM LLM(...) arguments. The KV cache gets generation.kv_cache_mb where the installed vLLM has
    kv_cache_memory_bytes (0.11 and later), else whatever gpu_share leaves after the weights."""
    kwargs: dict[str, Any] = {
        "model": model_dir,
        "tokenizer": tokenizer_dir,
        "dtype": dtype,
        "enable_prefix_caching": generation.prefix_cache_mb > 0,
        "gpu_memory_utilization": round(gpu_share, 3),
    }
    if generation.max_batch:
        kwargs["max_num_seqs"] = generation.max_batch
    if kv_cache_field:
        kwargs["kv_cache_memory_bytes"] = generation.kv_cache_mb * 2**20
    if adapter_rank is not None:
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank(adapter_rank))
    return kwargs


def answer_tokens(token_ids: Sequence[int], finish_reason: str | None, stop_reason: int | str | None,
                  stop_ids: Sequence[int]) -> tuple[list[int], Literal["stop", "length"]]:
    """An output's token ids cut after the first stop token (kept), and how it ended. vLLM's V1 engine keeps the
    stop token in token_ids; where a release leaves out the stop_token_ids entry that ended the answer
    (stop_reason), it is put back, so both backends hand a trainer the token that ends an answer."""
    if finish_reason not in ("stop", "length"):
        raise HoningError(f"vLLM ended an answer with finish_reason={finish_reason!r} (expected stop or length)")
    stops = set(stop_ids)
    tokens = list(token_ids)
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position + 1], "stop"
    if finish_reason == "stop" and isinstance(stop_reason, int):
        tokens.append(stop_reason)
    return tokens, finish_reason


def gpu_share(free_bytes: int, total_bytes: int) -> float:
    """The share of the GPU vLLM may ask for: its default, or less where other models already hold memory
    (vLLM refuses to start when the share it asks for is not free)."""
    return max(0.05, min(GPU_MEMORY_SHARE, free_bytes / total_bytes - 0.02))


def torch_dtype_name(dtype: str) -> str:
    """honing's dtype for vLLM: auto is bfloat16 where the GPU supports it, else float16 (vLLM's kernels are
    written for half precision; float32 must be asked for)."""
    if dtype != "auto":
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


# --------------------------------------------------------------------------- the backend


class VLLMModel:
    """The model `cfg` names, answered by vLLM.

    `identity` is what a run record stores (as ChatModel.load's, with backend "vllm"); `tokenizer` is honing's,
    `stop_ids` the tokens that end an answer (eos, the model's generation_config eos, the template's end of turn).
    """

    def __init__(self, cfg: ChatModelConfig):
        from honing.generate import stop_token_ids

        self.cfg = cfg
        self.generation = cfg.generation
        source, adapter_dir = _source_and_adapter(cfg)
        base = source.get("base") or source
        model_dir = _model_dir(base)
        self.tokenizer, tokenizer_dir = _tokenizer(cfg, source, adapter_dir, model_dir)
        self.stop_ids: list[int] = stop_token_ids(self.tokenizer, _GenerationConfigOf(model_dir))
        self.identity = _identity(cfg, base, adapter_dir)
        self.lora = None
        rank = _adapter_rank(adapter_dir) if adapter_dir else None
        self.llm = self._load(model_dir, tokenizer_dir, rank)
        if adapter_dir:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("honing-adapter", 1, str(adapter_dir))
        log.info("vLLM loaded %s%s (%s, prefix caching %s)", model_dir, f" + LoRA {adapter_dir}" if adapter_dir else "",
                 self.identity.get("dtype"), "on" if self.generation.prefix_cache_mb else "off")

    def _load(self, model_dir: Path, tokenizer_dir: Path, rank: int | None) -> Any:
        import dataclasses

        import torch
        from vllm import LLM
        from vllm.engine.arg_utils import EngineArgs

        free, total = torch.cuda.mem_get_info()
        fields = {f.name for f in dataclasses.fields(EngineArgs)}
        dtype = torch_dtype_name(self.cfg.dtype)
        self.identity["dtype"] = dtype
        kwargs = engine_kwargs(str(model_dir), str(tokenizer_dir), dtype, self.generation, adapter_rank=rank,
                               gpu_share=gpu_share(free, total), kv_cache_field="kv_cache_memory_bytes" in fields)
        if "kv_cache_memory_bytes" not in fields:
            log.info("this vLLM has no kv_cache_memory_bytes: its KV cache takes what gpu_memory_utilization=%s leaves "
                     "(generation.kv_cache_mb is not applied)", kwargs["gpu_memory_utilization"])
        try:
            return LLM(**kwargs)
        except Exception as err:  # vLLM raises many kinds (ValueError, RuntimeError, its own) at load
            raise HoningError(f"vLLM cannot load {model_dir}: {type(err).__name__}: {_first_line(err)} "
                              "(generation.kv_cache_mb sets its KV cache; generation.backend=torch avoids vLLM)") from None

    # ------------------------------------------------------------------ answering

    def complete(self, prompts: Sequence[Any], sampling: SamplingConfig, *, chat_template: bool,
                 system_prompt: str | None, streamer: Any = None) -> list[Any]:
        """One Completion per prompt, in order. vLLM's offline API does not stream: a streamer (a transformers
        TextStreamer, one prompt) gets the prompt and then the whole answer at once, when it is done."""
        from honing.data.prompts import encode_prompts
        from honing.generate import before_stop
        from honing.models.chat import Completion

        if not prompts:
            return []
        if streamer is not None and len(prompts) != 1:
            raise ValueError("a streamer can follow only one prompt at a time")
        encoded = encode_prompts(self.tokenizer, prompts, chat_template=chat_template, system_prompt=system_prompt)
        answers = self._generate(encoded, sampling, request_seeds(sampling.seed, len(encoded)))
        completions = []
        for ids, (tokens, finish) in zip(encoded, answers):
            text = before_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), sampling.stop)[0]
            completions.append(Completion(text.strip(), tokens, finish, len(ids), len(tokens)))
        if streamer is not None:
            import torch

            streamer.put(torch.tensor([encoded[0]]))  # the prompt (a TextStreamer with skip_prompt skips it)
            streamer.put(torch.tensor(answers[0][0]))
            streamer.end()
        return completions

    def sample(self, prompt_ids: Sequence[list[int]], sampling: SamplingConfig, *, samples: int,
               seed: int | None) -> list[list[list[int]]]:
        """result[i][j]: token ids of sample j of prompt i, cut after its stop token (kept) or at max_new_tokens;
        sample j of prompt i is seeded with (seed, else sampling.seed) + i·samples + j. This is RL's rollout
        path for a policy loaded from disk; a policy trained in memory keeps the torch engine (vLLM's copy of
        the weights would need syncing after every optimiser step, which this backend does not do)."""
        if not prompt_ids:
            return []
        base = sampling.seed if seed is None else seed
        rows = [list(ids) for ids in prompt_ids for _ in range(samples)]
        answers = self._generate(rows, sampling, request_seeds(base, len(prompt_ids), samples))
        return [[answers[i * samples + j][0] for j in range(samples)] for i in range(len(prompt_ids))]

    def _generate(self, prompt_ids: list[list[int]], sampling: SamplingConfig,
                  seeds: list[int]) -> list[tuple[list[int], Literal["stop", "length"]]]:
        """One vLLM request per prompt (its own seed), answers in order as (token ids, finish reason)."""
        from vllm import SamplingParams

        try:
            params = [SamplingParams(**sampling_kwargs(sampling, self.stop_ids, seed)) for seed in seeds]
        except ValueError as err:  # vLLM's own checks (VLLMValidationError is a ValueError)
            raise HoningError(f"vLLM rejects these sampling settings: {_first_line(err)}") from None
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]  # a vllm.inputs.TokensPrompt
        outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora)
        answers = []
        for output in outputs:
            first = output.outputs[0]
            answers.append(answer_tokens(first.token_ids, first.finish_reason, first.stop_reason, self.stop_ids))
        return answers


# --------------------------------------------------------------------------- loading helpers


def _source_and_adapter(cfg: ChatModelConfig) -> tuple[dict[str, Any], Path | None]:
    """Where the base weights are (honing's resolver) and the one adapter to apply as a LoRA, if any."""
    from honing.models.adapters import resolve_adapter_dir
    from honing.models.load import adapter_base_config
    from honing.models.source import resolve_model_source

    model_cfg = ModelConfig(path=cfg.path, tokenizer=cfg.tokenizer, dtype=cfg.dtype)
    adapter_dir = resolve_adapter_dir(cfg.adapter) if cfg.adapter else None
    if adapter_dir is not None:
        model_cfg = adapter_base_config(model_cfg, adapter_dir)
    source = resolve_model_source(model_cfg)
    if source["kind"] == "scratch":
        raise HoningError("vLLM loads a trained model; model.from_config has no weights yet")
    if source.get("adapter"):
        if adapter_dir is not None:
            raise HoningError(f"{source['run']} is an adapter run and adapter={cfg.adapter} is a second adapter: vLLM "
                              "applies one; merge the run's adapter first (honing merge) or use generation.backend=torch")
        adapter_dir = Path(source["adapter"])
    return source, adapter_dir


def _model_dir(base: dict[str, Any]) -> Path:
    from honing.models.load import convert_gguf

    if base["kind"] in ("gguf", "embedded"):
        return convert_gguf(Path(base["path"]))  # a float32 safetensors directory (cached)
    return Path(base["path"])


def _tokenizer(cfg: ChatModelConfig, source: dict[str, Any], adapter_dir: Path | None,
               model_dir: Path) -> tuple[Any, Path]:
    """honing's tokenizer (the torch path's choice: model.tokenizer, else the adapter's own, else the model's)
    and the directory vLLM reads the same one from."""
    from honing.models.load import (
        _has_tokenizer,
        _tokenizer_for_source,
        _tokenizer_from_dir,
    )

    if cfg.tokenizer:
        directory = Path(cfg.tokenizer).expanduser()
        return _tokenizer_from_dir(directory), directory
    if adapter_dir is not None and _has_tokenizer(adapter_dir):
        return _tokenizer_from_dir(adapter_dir), adapter_dir
    return _tokenizer_for_source(source), model_dir


def _identity(cfg: ChatModelConfig, base: dict[str, Any], adapter_dir: Path | None) -> dict[str, Any]:
    from honing.models.source import source_sha256, weight_files, weights_sha256

    return {"kind": "local", "path": cfg.path or "embedded default",
            "adapter": cfg.adapter or (str(adapter_dir) if adapter_dir else None),
            "sha256": source_sha256(base),
            "adapter_sha256": weights_sha256(weight_files(adapter_dir)) if adapter_dir else None,
            "backend": "vllm"}


def _adapter_rank(adapter_dir: Path) -> int:
    """r of a PEFT LoRA adapter (the largest, where rank_pattern gives some modules another)."""
    from honing.models.adapters import ADAPTER_CONFIG

    config_file = adapter_dir / ADAPTER_CONFIG
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HoningError(f"cannot read {config_file}: {err}") from None
    if str(config.get("peft_type", "LORA")).upper() != "LORA" or config.get("use_dora"):
        raise HoningError(f"{adapter_dir} is not a plain LoRA adapter (vLLM serves LoRA only); "
                          "use generation.backend=torch")
    ranks = [int(config.get("r") or 8), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


class _GenerationConfigOf:
    """Stands in for the model in stop_token_ids: the model directory's generation_config (its eos ids), which
    vLLM stops on too."""

    def __init__(self, model_dir: Path):
        from transformers import GenerationConfig as HFGenerationConfig

        try:
            self.generation_config = HFGenerationConfig.from_pretrained(model_dir)
        except (OSError, ValueError):  # no (readable) generation_config.json
            self.generation_config = None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
