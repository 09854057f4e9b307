"""Documents and chunking: headings bound chunks, paragraphs stay whole when they fit, long paragraphs split at
sentences then tokens, overlap by hand, exact character offsets; HTML, JSONL and bad documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from honing.rag.chunking import chunk_document, whitespace_spans
from honing.rag.documents import BadDocument, Document, html_to_text, read_document, split_sections


def doc(text: str) -> Document:
    return Document(Path("d.md"), text, split_sections(text))


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def chunk_texts(text: str, size: int, overlap: int) -> list[str]:
    return [c.text for c in chunk_document(doc(text), "d.md", whitespace_spans, size, overlap)]


def test_a_chunk_never_crosses_a_heading_and_keeps_its_heading_path():
    text = "intro words here\n\n# One\n\nalpha beta\n\n## Two\n\ngamma delta\n\n# Three\n\nepsilon\n"
    chunks = chunk_document(doc(text), "d.md", whitespace_spans, 100, 0)
    assert [(c.headings, c.text) for c in chunks] == [
        ((), "intro words here"), (("One",), "alpha beta"), (("One", "Two"), "gamma delta"),
        (("Three",), "epsilon")]
    assert [c.id for c in chunks] == ["d.md#0", "d.md#1", "d.md#2", "d.md#3"]
    assert all(text[c.start:c.end] == c.text for c in chunks)
    assert chunks[2].embedded_text == "One > Two\n\ngamma delta"


def test_a_comment_in_fenced_code_is_not_a_heading():
    text = "# Install\n\n```bash\n# fetch it first\npip install zephyr\n```\n\n# Use\n\nRun it.\n"
    assert [(s.headings, s.text.strip()) for s in split_sections(text)] == [
        (("Install",), "```bash\n# fetch it first\npip install zephyr\n```"), (("Use",), "Run it.")]


def test_paragraphs_are_kept_whole_when_they_fit():
    p1, p2, p3 = words("a", 5) + ".", words("b", 5) + ".", words("c", 5) + "."
    text = f"{p1}\n\n{p2}\n\n{p3}"
    # 12 tokens: p1 + p2 (10) fit, p3 does not; p2's last sentence (5 tokens) is more than the overlap of 3.
    assert chunk_texts(text, 12, 3) == [f"{p1}\n\n{p2}", p3]
    # an overlap of 5 carries p2 (one 5-token sentence) into the next chunk
    assert chunk_texts(text, 12, 5) == [f"{p1}\n\n{p2}", f"{p2}\n\n{p3}"]


def test_a_long_paragraph_splits_at_sentences_with_sentence_overlap():
    s = [f"{words(chr(ord('a') + i), 3)} end." for i in range(4)]  # four sentences of 4 tokens
    text = " ".join(s)  # one paragraph of 16 tokens
    # size 10: two sentences per chunk; overlap 4 carries the last sentence of each chunk into the next
    assert chunk_texts(text, 10, 4) == [" ".join(s[0:2]), " ".join(s[1:3]), " ".join(s[2:4])]
    assert chunk_texts(text, 10, 0) == [" ".join(s[0:2]), " ".join(s[2:4])]


def test_a_sentence_longer_than_a_chunk_splits_by_tokens_with_exact_overlap():
    text = words("w", 25)
    chunks = chunk_document(doc(text), "d.md", whitespace_spans, 10, 3)
    spans = [c.text.split() for c in chunks]
    assert spans == [[f"w{i}" for i in range(a, b)] for a, b in [(0, 10), (7, 17), (14, 24), (21, 25)]]
    assert [c.tokens for c in chunks] == [10, 10, 10, 4]


def test_the_content_hash_follows_the_text_and_headings():
    first = chunk_document(doc("# H\n\nsame text"), "d.md", whitespace_spans, 50, 0)[0]
    again = chunk_document(doc("# H\n\nsame text"), "other.md", whitespace_spans, 50, 0)[0]
    moved = chunk_document(doc("# G\n\nsame text"), "d.md", whitespace_spans, 50, 0)[0]
    assert first.sha256 == again.sha256 != moved.sha256


def test_chunks_fit_the_embedding_models_tokens():
    from transformers import AutoTokenizer

    from honing.rag.embed import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())

    def spans(text):
        return [tuple(s) for s in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]

    text = "# Manual\n\n" + " ".join(f"Sentence number {i} explains the unbelievably complicated setting." for i in range(60))
    chunks = chunk_document(doc(text), "d.md", spans, 64, 16)
    assert len(chunks) > 3
    assert all(len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) <= 64 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks), "split at sentence ends"
    assert all(a.end > b.start for a, b in zip(chunks, chunks[1:])), "consecutive chunks overlap"


def test_html_keeps_headings_and_drops_scripts():
    text = html_to_text("<html><head><style>p {}</style></head><body><h1>Title</h1><p>First &amp; one.</p>"
                        "<script>var x;</script><h2>Sub</h2><p>Second.</p></body></html>")
    assert text == "# Title\n\nFirst & one.\n\n## Sub\n\nSecond.\n"
    assert [s.headings for s in split_sections(text)] == [("Title",), ("Title", "Sub")]


def test_jsonl_reads_the_text_field_one_section_per_record(tmp_path):
    path = tmp_path / "faq.jsonl"
    path.write_text('{"body": "First answer."}\n\n{"body": "Second answer."}\n')
    document = read_document(path, "body")
    assert [(s.headings, s.text) for s in document.sections] == [(("record 1",), "First answer."),
                                                                  (("record 3",), "Second answer.")]
    assert document.text[document.sections[1].start:].startswith("Second answer.")
    with pytest.raises(BadDocument, match="line 1: no text field 'text'"):
        read_document(path)


def tiny_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with these lines of text in Helvetica, written by hand (byte offsets in its xref table)."""
    content = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines) + " ET"
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               "/Resources << /Font << /F1 5 0 R >> >> >>",
               f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_a_pdf_is_read_through_pypdf(tmp_path):
    path = tmp_path / "manual.pdf"
    path.write_bytes(tiny_pdf(["The Zephyr resets in ten seconds.", "Hold the blue button."]))
    document = read_document(path)
    assert document.text.split() == "The Zephyr resets in ten seconds. Hold the blue button.".split()
    (tmp_path / "blank.pdf").write_bytes(tiny_pdf([]))
    with pytest.raises(BadDocument, match="empty"):
        read_document(tmp_path / "blank.pdf")


@pytest.mark.parametrize("name, content, reason", [
    ("empty.md", b"  \n\n", "empty"),
    ("blob.txt", b"\x00\x01\x02binary", "binary"),
    ("latin.txt", "caf\u00e9".encode("latin-1"), "not UTF-8"),
    ("broken.pdf", b"%PDF-1.4 not really", "unreadable PDF"),
    ("sheet.xlsx", b"x", "not a supported"),
])
def test_bad_documents_say_why(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadDocument, match=reason):
        read_document(path)
