"""Objectives: each is a loss over a batch format, run by the shared engine."""
