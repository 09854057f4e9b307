"""A llama-architecture model as a GGUF file (llama.cpp, Ollama, LM Studio; transformers reads it back), and the
Ollama Modelfile that serves it.

    check_exportable(model, tokenizer)        a one-line ModelError before anything is written
    write_gguf(model, tokenizer, path, dtype) the file; returns what was written (tensor count, types, tokenizer)
    modelfile(tokenizer, gguf_name)           the Modelfile text, and whether its TEMPLATE is a translation

What goes in the file, in llama.cpp's terms:
- `llama.*` metadata: context length, embedding length, block count, feed-forward length, head counts, rope base
  and dimensions, the RMS-norm epsilon, the vocabulary size;
- the tensors under llama.cpp's names (`token_embd`, `blk.N.attn_q`, ...), Q and K rows permuted from Hugging
  Face's rotate-half layout into llama.cpp's interleaved pairs (transformers' GGUF loader undoes exactly this);
  no `output` tensor when the head is tied to the embedding (that is how a reader knows it is tied);
- the tokenizer as byte-level BPE (`tokenizer.ggml.model = gpt2`): every token by id, its type (control for
  special added tokens, user-defined for other added ones), the merges, the bos/eos/unk/pad ids, whether
  encoding adds bos/eos, the name of the pre-tokenizer (how text is split before BPE), and the chat template.

Matrices are f16 or f32; 1-D tensors (norm weights) always f32, as llama.cpp writes them. Tensors are converted one
at a time while the file is written, so the export needs little memory beyond the model's own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from honing.errors import HoningError, ModelError

log = logging.getLogger(__name__)

GGUFDtype = Literal["f32", "f16"]
ARCHITECTURE = "LlamaForCausalLM"
HF_FALLBACK = "export it with format=hf instead (a merged Hugging Face directory, which vLLM and TGI serve)"
CHATML_START, CHATML_END = "<|im_start|>", "<|im_end|>"
SKIPPED_BUFFERS = ("rotary_emb.inv_freq",)
"""State-dict entries that are computed from the config, not weights."""


@dataclass(frozen=True)
class LlamaShape:
    """The numbers of a llama model that its GGUF metadata states."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    rope_theta: float
    rms_eps: float
    vocab: int


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the file: its llama.cpp name, where it comes from, and how it is converted."""

    name: str
    source: Any
    convert: Callable[[Any], Any]
    """torch tensor (float32) -> numpy array as stored."""
    dtype: str
    """numpy dtype name: float16 or float32."""


@dataclass(frozen=True)
class Vocabulary:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    padded: int
    """Placeholder tokens added so the list is as long as the embedding."""


# --------------------------------------------------------------------------- checks


def check_exportable(model: Any, tokenizer: Any) -> tuple[LlamaShape, Vocabulary]:
    """The model's shape and vocabulary, or a ModelError saying why this model cannot become a GGUF."""
    shape = llama_shape(model)
    return shape, vocabulary(tokenizer, shape.vocab)


def llama_shape(model: Any) -> LlamaShape:
    config, architecture = model.config, type(model).__name__
    if getattr(config, "model_type", None) != "llama" or architecture != ARCHITECTURE:
        raise ModelError(f"GGUF export supports llama-architecture models ({ARCHITECTURE}), not {architecture}; "
                         f"{HF_FALLBACK}")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            raise ModelError(f"GGUF export does not write a llama model with {flag}=true; {HF_FALLBACK}")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ModelError(f"GGUF export writes llama's SiLU MLP, but this model uses {config.hidden_act}; {HF_FALLBACK}")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type != "default":
        raise ModelError(f"GGUF export writes plain rotary embeddings, but this model uses rope_type={rope_type}; "
                         f"{HF_FALLBACK}")
    heads = config.num_attention_heads
    return LlamaShape(
        layers=config.num_hidden_layers, hidden=config.hidden_size, intermediate=config.intermediate_size,
        heads=heads, kv_heads=config.num_key_value_heads or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        context=config.max_position_embeddings,
        rope_theta=float(rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0),
        rms_eps=float(config.rms_norm_eps), vocab=config.vocab_size)


# --------------------------------------------------------------------------- tokenizer


def _tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(f"GGUF export needs a fast (tokenizers) tokenizer, not {type(tokenizer).__name__}; "
                         f"{HF_FALLBACK}")
    return json.loads(backend.to_str())


def vocabulary(tokenizer: Any, vocab_size: int) -> Vocabulary:
    """Tokens by id (padded to the embedding's rows), their llama.cpp types, merges and pre-tokenizer name."""
    from gguf import TokenType

    spec = _tokenizer_json(tokenizer)
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        raise ModelError(f"GGUF export writes byte-level BPE tokenizers (GPT-2 style), not this {model.get('type')} "
                         f"one; {HF_FALLBACK}")
    if spec.get("normalizer") is not None:
        raise ModelError(f"the tokenizer normalises text first ({spec['normalizer'].get('type')}), which llama.cpp "
                         f"would not do; {HF_FALLBACK}")
    pre = pre_tokenizer_name(spec.get("pre_tokenizer"))
    backend = tokenizer.backend_tokenizer
    size = backend.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise ModelError(f"the tokenizer has {size} tokens but the model embeds only {vocab_size}; "
                         "fix the tokenizer or resize the model's embeddings")
    added = {token["id"]: token for token in spec.get("added_tokens", [])}
    tokens, types = [], []
    for token_id in range(vocab_size):
        text = backend.id_to_token(token_id)
        if text is None:  # the embedding has rows the tokenizer never produces
            tokens.append(f"[PAD{token_id}]")
            types.append(int(TokenType.UNUSED))
        else:
            tokens.append(text)
            extra = added.get(token_id)
            types.append(int(TokenType.NORMAL if extra is None else
                             TokenType.CONTROL if extra.get("special") else TokenType.USER_DEFINED))
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in model.get("merges", [])]
    return Vocabulary(tokens, types, merges, pre, padded=vocab_size - size)


def pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name (`tokenizer.ggml.pre`) for how this tokenizer splits text before BPE.

    ByteLevel with its own (GPT-2) regex is "gpt-2"; single digits then GPT-2 is "smollm" (SmolLM's own tokenizer;
    transformers reads that name back without the digit split); a Split regex followed by ByteLevel is named by the
    table transformers reads GGUF files with, so the file loads back into the same tokenizer."""
    steps = [] if pre is None else pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    last = steps[-1] if steps else {}
    if kinds and kinds[-1] == "ByteLevel" and not last.get("add_prefix_space", False):
        uses_regex = last.get("use_regex", True)
        if kinds == ["ByteLevel"] and uses_regex:
            return "gpt-2"
        if kinds == ["Digits", "ByteLevel"] and uses_regex and steps[0].get("individual_digits"):
            return "smollm"
        if kinds == ["Split", "ByteLevel"] and not uses_regex and steps[0].get("behavior") == "Isolated" \
                and not steps[0].get("invert"):
            name = _known_splits().get((steps[0].get("pattern") or {}).get("Regex"))
            if name:
                return name
    described = "+".join(str(kind) for kind in kinds) or "none"
    raise ModelError(f"GGUF export does not know llama.cpp's name for this tokenizer's pre-tokenizer ({described}), "
                     f"so llama.cpp would split text differently; {HF_FALLBACK}")


def _known_splits() -> dict[str, str]:
    """regex -> pre-tokenizer name, from transformers' GGUF reader (first name per regex); empty if it moved."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:
        return {}
    names: dict[str, str] = {}
    for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
        names.setdefault(regex, name)
    return names


def _adds_special(tokenizer: Any) -> tuple[bool, bool]:
    """(adds bos, adds eos) when encoding with special tokens: seen, not read from settings that moved."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    if len(full) == len(plain):
        return False, False
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    adds_bos = bos is not None and full[0] == bos and full[1:1 + len(plain)] == plain
    adds_eos = eos is not None and full[-1] == eos and full[-1 - len(plain):-1] == plain
    return adds_bos, adds_eos


def _add_tokenizer(writer: Any, tokenizer: Any, vocab: Vocabulary) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for token_id, add in ((tokenizer.bos_token_id, writer.add_bos_token_id),
                          (tokenizer.eos_token_id, writer.add_eos_token_id),
                          (tokenizer.unk_token_id, writer.add_unk_token_id),
                          (tokenizer.pad_token_id, writer.add_pad_token_id)):
        if token_id is not None and token_id < len(vocab.tokens):
            add(int(token_id))
    adds_bos, adds_eos = _adds_special(tokenizer)
    writer.add_add_bos_token(adds_bos)
    writer.add_add_eos_token(adds_eos)
    template = tokenizer.chat_template
    if template:
        writer.add_chat_template(template if isinstance(template, str) else
                                 [{"name": name, "template": text} for name, text in template.items()])
        end_of_turn = tokenizer.backend_tokenizer.token_to_id(CHATML_END)
        if end_of_turn is not None and CHATML_END in str(template) and end_of_turn != tokenizer.eos_token_id:
            writer.add_eot_token_id(end_of_turn)  # chat turns end here, not at eos: llama.cpp stops on it


# --------------------------------------------------------------------------- tensors


def rotary_permute(weight: Any, heads: int) -> Any:
    """Q/K rows from Hugging Face's rotate-half order (per head: first half, second half) to llama.cpp's
    interleaved pairs (x0, x_half, x1, x_half+1, ...)."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def tensor_plan(model: Any, shape: LlamaShape, dtype: GGUFDtype) -> list[PlannedTensor]:
    """Every tensor of the file in order, with its conversion; a ModelError for a weight llama.cpp has no name for."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, shape.layers)
    state = model.state_dict()
    tied = _tied(model, state)
    plan = []
    for hf_name, tensor in state.items():
        if hf_name.endswith(SKIPPED_BUFFERS) or (tied and hf_name == "lm_head.weight"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelError(f"the model's tensor {hf_name} has no llama.cpp name; {HF_FALLBACK}")
        heads = shape.heads if ".attn_q." in name else shape.kv_heads if ".attn_k." in name else None
        stored = "float16" if dtype == "f16" and tensor.ndim >= 2 else "float32"
        plan.append(PlannedTensor(name, tensor, _converter(heads, stored), stored))
    return plan


def _tied(model: Any, state: dict[str, Any]) -> bool:
    """Whether the output head is the embedding (same storage, or equal values): then no `output` tensor."""
    import torch

    head, embedding = state.get("lm_head.weight"), state.get("model.embed_tokens.weight")
    if head is None:
        return True
    return embedding is not None and (head.data_ptr() == embedding.data_ptr() or torch.equal(head, embedding))


F16_MAX = 65504.0
"""The largest finite float16."""


def _converter(heads: int | None, stored: str) -> Callable[[Any], Any]:
    def convert(tensor: Any) -> Any:
        weight = tensor.detach().to("cpu").float()
        if heads is not None:
            weight = rotary_permute(weight, heads)
        if stored == "float16" and weight.numel() and weight.abs().max().item() > F16_MAX:
            raise HoningError(f"a {tuple(weight.shape)} weight holds values beyond float16's range (±{F16_MAX:g}), "
                              "which would become inf; export with gguf_dtype=f32")
        return weight.numpy().astype(stored)
    return convert


# --------------------------------------------------------------------------- the file


def write_gguf(model: Any, tokenizer: Any, path: str | Path, *, dtype: GGUFDtype = "f16",
               name: str | None = None) -> dict[str, Any]:
    """Write `model` (a plain llama model, adapters already merged) and its tokenizer to `path`."""
    import gguf
    import numpy as np

    shape, vocab = check_exportable(model, tokenizer)
    plan = tensor_plan(model, shape, dtype)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_type("model")
        writer.add_name(name or "model")
        writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32))
        _add_architecture(writer, shape)
        _add_tokenizer(writer, tokenizer, vocab)
        for planned in plan:  # headers first; the data is converted tensor by tensor below
            numel = int(planned.source.numel())
            writer.add_tensor_info(planned.name, tuple(planned.source.shape), np.dtype(planned.dtype),
                                   numel * np.dtype(planned.dtype).itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for planned in plan:
            writer.write_tensor_data(planned.convert(planned.source))
    finally:
        writer.close()
    if vocab.padded:
        log.info("the vocabulary was padded with %d placeholder tokens to the embedding's %d rows",
                 vocab.padded, shape.vocab)
    return {"tensors": len(plan), "dtype": dtype, "tied_embeddings": all(p.name != "output.weight" for p in plan),
            "pre_tokenizer": vocab.pre, "tokens": len(vocab.tokens), "padded_tokens": vocab.padded,
            "chat_template": bool(tokenizer.chat_template)}


def _add_architecture(writer: Any, shape: LlamaShape) -> None:
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.intermediate)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(shape.vocab)
    if shape.head_dim * shape.heads != shape.hidden:  # llama.cpp assumes hidden / heads unless told
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)


# --------------------------------------------------------------------------- Ollama


@dataclass(frozen=True)
class Modelfile:
    text: str
    template: Literal["chatml", "gguf", "none"]
    """chatml: TEMPLATE translated here; gguf: left to Ollama (the template is not ChatML-like); none: no template."""
    system: str | None = None


def modelfile(tokenizer: Any, gguf_name: str) -> Modelfile:
    """The Ollama Modelfile next to `gguf_name`: a ChatML chat template becomes TEMPLATE (with its default system
    prompt as SYSTEM and stops at the turn markers); any other template is left to Ollama, which reads the GGUF's."""
    lines = ["# Ollama: ollama create NAME -f Modelfile (written by honing export)", f"FROM ./{gguf_name}"]
    if not tokenizer.chat_template:
        lines += ["# The model has no chat template: Ollama passes prompts through as plain text."]
        return Modelfile("\n".join(lines) + "\n", "none")
    found, system = chatml_default_system(tokenizer)
    if not found:
        lines += ["# The chat template is not ChatML-like (<|im_start|>role ... <|im_end|>), so honing does not",
                  "# translate it: no TEMPLATE here, and Ollama uses the template stored in the GGUF",
                  "# (tokenizer.chat_template) if it recognises it. Check `ollama show NAME --template`."]
        if tokenizer.eos_token:
            lines.append(f"PARAMETER stop {_quoted(tokenizer.eos_token)}")
        return Modelfile("\n".join(lines) + "\n", "gguf")
    lines += ['TEMPLATE """{{- range .Messages }}' + CHATML_START + "{{ .Role }}",
              "{{ .Content }}" + CHATML_END,
              "{{ end }}" + CHATML_START + 'assistant', '"""']
    if system and '"""' not in system:
        lines += [f'SYSTEM """{system}"""']
    elif system:
        lines += ["# The default system prompt holds three double quotes, which a Modelfile cannot quote: "
                  "set it per request."]
    stops = [CHATML_END, CHATML_START]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops]
    return Modelfile("\n".join(lines) + "\n", "chatml", system)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _chatml(messages: list[dict[str, str]]) -> str:
    return "".join(f"{CHATML_START}{m['role']}\n{m['content']}{CHATML_END}\n" for m in messages)


def chatml_default_system(tokenizer: Any) -> tuple[bool, str | None]:
    """(is ChatML, default system prompt). Decided by rendering, not by reading the Jinja: with a system message the
    template must give exactly ChatML; without one, ChatML, or ChatML with one system turn put first (its text is
    the default system prompt)."""
    conversation = [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
                    {"role": "user", "content": "U2"}]
    system = [{"role": "system", "content": "S"}]
    generation = f"{CHATML_START}assistant\n"
    try:
        with_system = tokenizer.apply_chat_template(system + conversation, tokenize=False, add_generation_prompt=True)
        without = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # a template that cannot render these turns is not ChatML either
        log.info("the chat template did not render a plain conversation: %s", err)
        return False, None
    if with_system != _chatml(system + conversation) + generation:
        return False, None
    rest = _chatml(conversation) + generation
    if without == rest:
        return True, None
    head = f"{CHATML_START}system\n"
    if without.startswith(head) and without.endswith(CHATML_END + "\n" + rest):
        default = without[len(head):-len(CHATML_END + "\n" + rest)]
        if CHATML_END not in default and CHATML_START not in default:
            return True, default
    return False, None
