"""Errors that mean "the input is wrong": the command line reports them in one sentence.

Every class is a ``ValueError``, so ``except ValueError`` keeps working for callers
who do not care which input was wrong. Missing files stay ``FileNotFoundError``.
"""


class ERFUsageError(ValueError):
    """A bad argument, path or configuration; the message names the fix."""


class ConfigError(ERFUsageError):
    """A config that cannot be read, or whose model cannot be built (the message names
    the ``--cfg-options`` entry that broke the build when one did)."""


class NotACheckpointError(ERFUsageError):
    """A checkpoint path that names a file torch cannot read as a checkpoint at all
    (text, an image, a truncated download), as opposed to one that holds objects
    outside the weights-only allow-list."""


class RunStateError(ERFUsageError):
    """The saved state of an interrupted run is damaged and cannot be resumed."""


class OutDirError(ERFUsageError):
    """The output directory cannot be used, or holds another run's results."""
