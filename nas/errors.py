"""Errors raised on bad user input. Each carries a message that names the problem."""


class SrnasError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class SpecError(SrnasError, ValueError):
    """A malformed architecture spec or search space (unknown key, bad value, unknown block)."""


class CheckpointError(SrnasError):
    """A checkpoint that cannot be read or does not match the architecture."""


class DataError(SrnasError):
    """A missing data directory, an unreadable image, mismatched HR/LR sizes, a wrong scale."""


class RunLockedError(SrnasError):
    """A run folder that another process writes (its ``.lock`` names the owner's pid and host)."""


class UsageError(SrnasError, ValueError):
    """A wrong command line: an option value out of range, contradictory or missing options (exit status 2)."""
