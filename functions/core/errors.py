"""The toolkit's one error type for bad input and missing or corrupt files.

Its message names the problem and the fix; the command line prints it as one line.  This
module imports nothing heavy, so code that only needs to raise or catch it stays light.
"""


class DataError(RuntimeError):
    """A dataset, file or parameter is missing, corrupt or asked for in a way that cannot work."""


class Interrupted(Exception):
    """A long computation stopped by Ctrl-C after saving what it had; the message says what is
    saved and how to resume."""
