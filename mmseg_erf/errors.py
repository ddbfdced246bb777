"""Errors that mean "the input is wrong": the command line reports them in one sentence."""


class ERFUsageError(ValueError):
    """A bad argument, path or configuration; the message names the fix."""
