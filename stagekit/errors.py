"""Errors meant for the user: one line that says what is wrong and what to do."""


class UserError(Exception):
    """Bad input the user can fix; the CLI prints it as one line and exits 1."""

    exit_code = 1


class ConfigError(UserError):
    """An unknown or mistyped config key; exit 2 like any usage error."""

    exit_code = 2
