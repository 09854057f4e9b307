"""The data layer: files -> validated records -> tokens with loss masks -> packed batches.

    loading     read .jsonl/.json/.csv/.parquet/.txt files, directories and `datasets` dirs
    formats     detect and normalise text, instruction, chat, sharegpt and preference records
    templating  render conversations with the chat template and mask what is not trained
    packing     pack examples into rows; collate rows or padded examples into tensors
    split       deterministic train/validation split
    cache       tokenised data cached on disk
    prepare     all of the above for a stage: prepare_data(cfg.data, tokenizer, purpose=...)

Importing this package does not import torch, transformers or datasets.
"""

from honing.data.formats import detect_format, normalize
from honing.data.loading import load_dataset_file, read_records, write_rejects
from honing.data.packing import collate_packed, collate_padded, pack
from honing.data.prepare import prepare_data
from honing.data.split import split_records
from honing.data.templating import CHATML_TEMPLATE, render_prompt, tokenize_conversation, tokenize_text
from honing.data.types import IGNORE_INDEX, PreparedData, Reject, TokenizedExample

__all__ = [
    "CHATML_TEMPLATE",
    "IGNORE_INDEX",
    "PreparedData",
    "Reject",
    "TokenizedExample",
    "collate_packed",
    "collate_padded",
    "detect_format",
    "load_dataset_file",
    "normalize",
    "pack",
    "prepare_data",
    "read_records",
    "render_prompt",
    "split_records",
    "tokenize_conversation",
    "tokenize_text",
    "write_rejects",
]
