"""Errors raised on bad input: each names the file, the field and the fix."""

from __future__ import annotations


class CellgnnInputError(ValueError):
    """Bad user input (data, config, checkpoint).

    The message is built as ``"<file>: <field>: <problem>. Fix: <fix>"`` so that a
    user reading one line of a Snakemake log knows where to look and what to do.
    """

    def __init__(self, problem: str, *, file: str | None = None, field: str | None = None,
                 fix: str | None = None):
        self.file, self.field, self.problem, self.fix = file, field, problem, fix
        parts = []
        if file:
            parts.append(str(file))
        if field:
            parts.append(f"field '{field}'")
        head = ": ".join(parts)
        msg = f"{head}: {problem}" if head else problem
        if fix:
            msg += f". Fix: {fix}"
        super().__init__(msg)
