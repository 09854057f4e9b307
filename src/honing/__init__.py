"""honing: from a base language model to a specialised, aligned, evaluated model, with the evidence."""

__version__ = "0.1.0"
