"""The one exception type for a user's mistake (a missing folder, a wrong checkpoint, ...).

The CLI turns it into one line on stderr and exit status 2; anything else is a programming error
and keeps its traceback.
"""


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""
