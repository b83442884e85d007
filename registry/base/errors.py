"""Exceptions saereg raises, each written for the person who has to act on it.

Every error carries enough context (file, line, release, SAE id) in its message that
a user never needs a traceback to know what to fix. The CLI maps them to exit codes.
"""

from __future__ import annotations


class SaeregError(Exception):
    """Base class: anything saereg reports as a failure (CLI exit code 1)."""

    exit_code = 1


class UnknownReferenceError(SaeregError, LookupError):
    """A release, SAE id, Neuronpedia id or hf: reference names nothing (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()) -> None:
        self.suggestions = tuple(suggestions)
        if suggestions:
            message += " Did you mean: " + ", ".join(suggestions) + "?"
        super().__init__(message)


class ReleaseFileError(SaeregError):
    """A release file cannot be read as a release (bad YAML, schema violation, bad version)."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__(message)


class PluginError(SaeregError):
    """A plugin is missing, misbehaves, or two plugins claim the same format name."""


class CatalogueWarning(UserWarning):
    """A release file was left out of the catalogue, or claims an id another release has."""


class CacheWarning(UserWarning):
    """A cached file was damaged or not the one asked for, and is being rebuilt."""


class ArgumentError(SaeregError, ValueError):
    """An argument such as `dtype` or `device` cannot be honoured (exit code 2)."""

    exit_code = 2
