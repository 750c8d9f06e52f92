"""Exceptions that carry a one-line message meant for the user."""


class UserError(Exception):
    """Something the user can fix; str() says what and how. The CLI prints it and exits 1."""

    exit_code = 1
