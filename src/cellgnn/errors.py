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


def failure_report(snakemake_log) -> str:
    """What a failed run ends with: for each failed job named in Snakemake's log, the ``cellgnn: ...``
    line of its rule log (file, field, fix) and the log's path; jobs that failed without one (a
    crash, a kill) are listed with their log to read. snakemake_log: a path or a list of paths."""
    import re
    from pathlib import Path

    paths = [snakemake_log] if isinstance(snakemake_log, (str, Path)) else list(snakemake_log or [])
    text = ""
    for p in paths:  # Snakemake passes its log file (a list of them in some versions)
        try:
            text += Path(p).read_text(errors="replace")
        except OSError:
            continue
    logs = []
    for block in re.split(r"\n(?=Error in rule )", "\n" + text)[1:]:
        m = re.search(r"^\s*log: (.+?) \(check log file", block, re.M)
        rule = re.match(r"Error in rule (\S+?):", block)
        logs += [(rule.group(1) if rule else "?", p.strip()) for p in (m.group(1).split(",") if m else [])]
    if not logs:
        return ""
    lines = ["", "cellgnn: the run stopped. What failed, and where to read more:"]
    for rule, log in dict.fromkeys(logs):
        try:
            messages = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.startswith("cellgnn: ")]
        except OSError:
            messages = []
        lines += [f"  {messages[-1]}" if messages else f"  rule {rule} failed without a cellgnn message",
                  f"    log: {log}"]
    return "\n".join(lines) + "\n"
