"""Errors the command line turns into one clear line and exit code 2."""


class SpecError(ValueError):
    """Bad input: an unknown layer, sizes that do not fit, a missing file, …

    The message is one line that says what is wrong and how to mend it.
    """


class BackendUnavailable(SpecError):
    """A backend that was asked for cannot be used here (its framework is not installed)."""
