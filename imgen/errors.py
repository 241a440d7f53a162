"""The one exception type imgen raises for bad input: its message names the problem and the fix."""


class ImgenError(Exception):
    """Bad input or state a user can fix. The CLI prints it as one line, without a traceback."""
