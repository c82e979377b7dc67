"""The one exception type that reaches the user as a single line."""


class UserError(Exception):
    """Bad input or an unusable environment: printed as one line, exit status 2.

    Raise it with a message that names the offending value, file or folder and, where
    there is one, what to do about it. Never raise it after a study has been written to
    unless the write is complete: a UserError must leave the study as it was.
    """
