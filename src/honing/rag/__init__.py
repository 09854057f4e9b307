"""Retrieval over your documents: the alternative to fine-tuning that needs no training.

    documents   .md, .txt, .html, .jsonl, .pdf as text with headings; bad documents named
    chunking    by the embedding model's tokens, with overlap, never across a heading
    embed       the embedded all-MiniLM-L6-v2 (or a local sentence-transformers directory)
    store       FAISS + SQLite + bm25s on disk, updated incrementally by content hash
    search      BM25 + dense, fused by reciprocal rank fusion, optionally reranked
    ask         the prompt with labelled chunks, and the citations read back
    metrics     recall@k, MRR, nDCG@k, overlap groundedness, the answer found
    evaluate    a QA set with gold ids scored: per question, then bootstrap means overall and per kind

The commands are in honing.stages.rag (`honing rag index`, `honing rag ask`, `honing rag eval`).
"""
