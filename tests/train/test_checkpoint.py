"""Checkpoint helpers: a resumed run's step logs lose the lines written after its checkpoint."""

from __future__ import annotations

from honing.train.checkpoint import truncate_metrics


def test_step_logs_are_cut_back_to_the_checkpoint_and_a_torn_line_is_dropped(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"step": 1, "completion": "a"}\n{"step": 2, "completion": "b"}\n'
                    '{"step": 3, "completion": "c"}\n{"step": 4, "compl', encoding="utf-8")
    truncate_metrics(path, 2)
    assert path.read_text(encoding="utf-8") == '{"step": 1, "completion": "a"}\n{"step": 2, "completion": "b"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["samples.jsonl"]  # written atomically, no temporary left
    truncate_metrics(tmp_path / "missing.jsonl", 2)  # nothing to cut: nothing written
    assert not (tmp_path / "missing.jsonl").exists()
