"""The error a subcommand raises for a mistake the user can fix."""


class CLIError(Exception):
    """An error the user can fix, reported as ``rnnfast COMMAND: error: message``."""
