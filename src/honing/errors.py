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


# Exit codes of the `honing` command (the README's table lists them).
EXIT_OK = 0
EXIT_USAGE = 1
"""Bad input or usage: a config, a data file, a model path, an argument (one line says which and how to fix it)."""
EXIT_CRASH = 2
"""An unexpected error, a bug in honing: one line, and the traceback in a crash file."""
EXIT_GATE_FAILED = 3
"""`eval --gate` or `redteam --fail-above`: the candidate regressed, missed a threshold, or was attacked too often."""
EXIT_INTERRUPTED = 130
"""Ctrl-C: the run stopped after saving its work (--resume continues it)."""
