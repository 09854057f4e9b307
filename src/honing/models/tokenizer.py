"""A byte-level BPE tokenizer trained on a corpus, for models built from scratch.

It speaks ChatML (`<|im_start|>role\\n...<|im_end|>\\n`) so a pre-trained model can later be
chat-tuned with the same tokenizer; `<|endoftext|>` separates documents and serves as
bos, eos and pad.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DOCUMENT_TOKEN = "<|endoftext|>"
TURN_START = "<|im_start|>"
TURN_END = "<|im_end|>"
SPECIAL_TOKENS = [DOCUMENT_TOKEN, TURN_START, TURN_END]

def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Train a byte-level BPE on `texts`: at most `vocab_size` tokens (fewer when the corpus
    runs out of merges), every byte representable, so any text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {len(alphabet) + len(SPECIAL_TOKENS)} (256 bytes + special tokens)")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=DOCUMENT_TOKEN,
        eos_token=DOCUMENT_TOKEN,
        pad_token=DOCUMENT_TOKEN,
        additional_special_tokens=[TURN_START, TURN_END],
        clean_up_tokenization_spaces=False,
    )
    from honing.data.templating import CHATML_TEMPLATE

    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
