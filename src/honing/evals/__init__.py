"""Evaluation: metrics, tasks, judges, reports."""
