"""The one exception type for mistakes a user can make (bad file, bad key, missing model...).

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps its
traceback.
"""


class GreencodeError(Exception):
    """A user-facing error: its message is the whole story, printed on one line."""
