"""The error that stops a whole command, and the exit codes every job reports with.

They live in the core, not in the CLI, because the archive engines and the benchmark raise them too
and must not import the CLI (docs/ARCHITECTURE.md)."""
from __future__ import annotations

from typing import Any

import click

# Exit codes, most important first: a fake found is never hidden by another input's failure.
EXIT_REAL, EXIT_FAKE, EXIT_FAILED, EXIT_UNSURE = 0, 1, 2, 3


class CommandError(click.ClickException):
    """A problem that stops the whole command: one line `error: ...` on stderr, exit status 2."""

    exit_code = EXIT_FAILED

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
