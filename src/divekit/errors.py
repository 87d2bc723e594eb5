"""Errors that mean "the user asked for something we cannot do", not "divekit has a bug".

The command line prints any :class:`DivekitError` as one line on stderr and exits non-zero; every
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class DivekitError(Exception):
    """Base class: a problem the user can fix (bad input, missing data, a wrong checkpoint)."""

    exit_code = 2


class DataError(DivekitError):
    """A dataset file is missing, corrupt, or cannot be fetched."""

    exit_code = 3


class ChecksumError(DataError):
    """A file's digest differs from the registry's: the file is never used."""


class CheckpointError(DivekitError):
    """A checkpoint is unreadable, carries code, or belongs to another model."""

    exit_code = 4


class UnknownNameError(DivekitError):
    """A model, experiment or dataset name that is not registered."""


class NonFiniteLossError(DivekitError):
    """Training produced a NaN or infinite loss and was stopped."""

    exit_code = 5


class ShapeError(DivekitError, ValueError):
    """A tensor handed to a model or block has the wrong shape or dtype."""
