"""Errors a user can act on.

A `HoningError` carries one line that says what is wrong and what to do; the CLI prints it
and exits non-zero without a traceback. Anything else that escapes is a bug in honing.
"""

from __future__ import annotations


class HoningError(Exception):
    """A problem with the user's input (config, data, model), described in one line."""


class ConfigError(HoningError):
    """A config file or override that does not validate."""


class DataError(HoningError):
    """A data file that cannot be read, or a record that is not valid."""


class ModelError(HoningError):
    """A model, tokenizer or adapter that cannot be loaded or saved."""
