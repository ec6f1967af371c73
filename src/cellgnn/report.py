"""``summary.md`` with every stage's tables: the model comparison (figures stage), then
augmentation and explanation sections when those stages ran."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .plots import write_summary
from .plots_explain import _fmt, explanation_section
from .stats import t_interval


def augmentation_section(files: list[str]) -> str:
    """Markdown for the augment stage's outputs: scalar entries of ``*.json`` metrics and,
    for ``*.csv`` tables, numeric columns averaged over seeds (95% CI) per setting."""
    lines = []
    for f in sorted(files, key=str):
        p = Path(f)
        if p.suffix == ".json":
            data = json.loads(p.read_text())
            flat = _flatten(data)
            if flat:
                lines += [f"`{p.name}`:", ""] + [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}"
                                                 for k, v in flat.items()] + [""]
        elif p.suffix == ".csv":
            df = pd.read_csv(p)
            num = [c for c in df.select_dtypes("number").columns if c != "seed"]
            keys = [c for c in df.columns if c not in num and c != "seed"]
            if not num:
                continue
            lines += [f"`{p.name}` (mean over seeds, 95% CI):", "",
                      "| " + " | ".join(keys + num) + " |", "|" + "---|" * (len(keys) + len(num))]
            groups = df.groupby(keys, sort=False) if keys else [((), df)]
            for key, grp in groups:
                key = key if isinstance(key, tuple) else (key,)
                lines.append("| " + " | ".join([str(k) for k in key] + [_fmt(*t_interval(grp[c])) for c in num]) + " |")
            lines.append("")
    return "\n".join(lines)


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{name}."))
        elif isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and not np.isfinite(v)):
            out[name] = v
    return out


def run_summary(metrics_dir: str, qc_json: str, path: str, dataset: str, notes: list[str] = (),
                explain_run: str | None = None, augment_files: list[str] = ()) -> str:
    """Rule summary: ``summary.md`` with the data, the run's design decisions and the model tables
    (from the collect_metrics rule's ``metrics_dir``), plus augmentation and explanation sections
    for the stages present in this run."""
    sections = {}
    if augment_files:
        sections["Augmentation (ACTIVA)"] = augmentation_section(list(augment_files))
    if explain_run:
        sections["Explanations"] = explanation_section(Path(explain_run).parent)
    d = Path(metrics_dir)
    return write_summary(str(d / "models_summary.csv"), str(d / "margins.csv"), str(d / "calls.csv"), qc_json, path,
                         dataset, notes=notes, sections=sections)
