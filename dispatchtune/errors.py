"""The one error type for a user's mistake: the CLI prints it as one line with the fix and exits with code 2."""


class UserError(Exception):
    pass
