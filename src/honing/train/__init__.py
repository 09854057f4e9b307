"""The training engine: one loop shared by every objective."""
