"""Benchmarks (not tests): honing against TRL's SFTTrainer on the same work. See bench/RESULTS.md."""
