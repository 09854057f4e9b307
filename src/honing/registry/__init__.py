"""The registry: model versions and aliases in SQLite, the lineage walk from a model back to raw
bytes, the audit report built from records, and pipelines whose gates promote or reject."""
