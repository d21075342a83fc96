"""The project's errors: each says what was wrong, where (file or option), and what was expected."""


class FERError(Exception):
    """Base of the errors ``python -m fer`` reports in one paragraph instead of a traceback."""

    kind = "error"


class ConfigError(FERError, ValueError):
    """A setting that cannot work: unknown backbone, bad value."""

    kind = "config error"


class RunError(FERError, RuntimeError):
    """A run that cannot start or go on: unwritable log folder, corrupt checkpoint, nothing to resume."""

    kind = "run error"
