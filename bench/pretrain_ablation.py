"""Issue 21 ablation: pretrained embedding and layered self-distillation under donor cross-validation.

Runs the workflow (real Snakemake runs, ``results/<dataset>_<arm>/metrics/models.csv``) once per arm
on one base config, then compares the arms paired: each model's held-out predictions, pooled over
the donor folds, are bootstrapped over donors with the same donor resamples for every arm and
averaged over seeds (:func:`cellgnn.heldout.bootstrap_over_donors`), so a margin's 95% interval
carries donors x seeds. Arms (same data, folds and seeds):

- ``pca``: the base config (kNN graph on PCA, gene node features): logreg_cv and gat;
- ``pretrain``: graph and node features from the pretrained embedding: gat and logreg (on it);
- ``pretrain_graph``: kNN graph on the embedding, gene node features: gat;
- ``sd``: gat with train.self_distillation.

    python bench/pretrain_ablation.py config/ablation_pretrain_severity.yaml
    python bench/pretrain_ablation.py config/ablation_pretrain_kang.yaml --skip-run   # compare only

What the arms share (data, preprocessing, the pretrain stage, graphs of arms with the same graph
settings) is computed once and copied to the other arms with its file times, so Snakemake does not
rerun it. Writes ``bench/out/pretrain_ablation_<dataset>.csv`` (every arm x model: metric with its interval, and
each comparison's paired margin) and prints it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cellgnn.heldout import bootstrap_over_donors, read_test_predictions  # noqa: E402
from cellgnn.stats import bootstrap_interval  # noqa: E402

ARMS = {  # config sections each arm overlays on the base config
    "pca": {},
    "pretrain": {"graph": {"features": "pretrain", "node_features": "pretrain"}, "train": {"models": ["logreg", "gat"]}},
    "pretrain_graph": {"graph": {"features": "pretrain"}, "train": {"models": ["gat"]}},
    "sd": {"train": {"models": ["gat"], "self_distillation": True}},
}
# (arm, model) compared against (arm, model)
COMPARISONS = [
    (("pretrain", "gat"), ("pca", "gat")),
    (("pretrain_graph", "gat"), ("pca", "gat")),
    (("pretrain", "logreg"), ("pca", "gat")),
    (("pretrain", "logreg"), ("pca", "logreg_cv")),
    (("pca", "gat"), ("pca", "logreg_cv")),
    (("sd", "gat"), ("pca", "gat")),
]
METRICS = ("balanced_accuracy", "macro_f1", "auroc")


def share_upstream(dataset: str, arm: str) -> None:
    """Copy (keeping times) what an arm shares with arms already run, so it is computed once: the data
    and preprocessing (same config sections in every arm), the pretrain stage, and the graphs of an arm
    with the same graph settings."""
    import shutil

    dst = ROOT / "results" / f"{dataset}_{arm}"
    graph_of = {a: ARMS[a].get("graph") for a in ARMS}
    for other in ARMS:
        src = ROOT / "results" / f"{dataset}_{other}"
        if other == arm or not (src / "metrics" / "models.csv").exists():
            continue
        names = ["raw.h5ad", "qc.json", "preprocessed.h5ad", "pretrain"]
        if graph_of[other] == graph_of[arm]:
            names.append("graph")
        for name in names:
            if (src / name).exists() and not (dst / name).exists():
                dst.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if (src / name).is_dir() else shutil.copy2)(src / name, dst / name)
                print(f"shared {name} from arm {other}", flush=True)


def overlay(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s keys replaced, nested sections merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = overlay(base.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def run_arm(config: Path, dataset: str, arm: str, cores: int) -> str:
    """Run the workflow on the base config with the arm's sections overlaid (one config file per arm,
    written to ``bench/out/``: ``--config`` would pass nested booleans and numbers as strings)."""
    name = f"{dataset}_{arm}"
    share_upstream(dataset, arm)
    arm_config = ROOT / "bench" / "out" / f"pretrain_ablation_{name}.yaml"
    arm_config.parent.mkdir(exist_ok=True)
    cfg = overlay(yaml.safe_load(config.read_text()), {**ARMS[arm], "dataset": name})
    arm_config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", str(cores),
           "--resources", f"gpu={cores}", "--configfile", str(arm_config), "--", f"results/{name}/metrics/models.csv"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return name


def predictions(name: str) -> pd.DataFrame:
    files = sorted(str(p) for p in (ROOT / "results" / name / "models" / "donor_cv").rglob("predictions.csv"))
    return read_test_predictions(files)


def compare(dataset: str, arms: list[str], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    preds = {arm: predictions(f"{dataset}_{arm}") for arm in arms}
    classes = [c[len("p_"):] for c in next(iter(preds.values())).columns if c.startswith("p_")]
    boot, rows = {}, []
    for arm, p in preds.items():
        for model, pm in p.groupby("model"):
            reps, point = boot[(arm, model)] = bootstrap_over_donors(dict(tuple(pm.groupby("seed"))), classes,
                                                                     n_boot=n_boot, seed=seed)
            row = {"kind": "score", "arm": arm, "model": model, "vs": "", "seeds": " ".join(map(str, sorted(
                pm["seed"].unique()))), "folds": pm["fold"].nunique(), "donors": pm["donor"].nunique()}
            for m in METRICS:
                row[m], row[f"{m}_low"], row[f"{m}_high"] = bootstrap_interval(point[m], reps[m])
            rows.append(row)
    for a, b in COMPARISONS:
        if a not in boot or b not in boot:
            continue
        row = {"kind": "margin", "arm": a[0], "model": a[1], "vs": f"{b[1]} ({b[0]})"}
        for m in METRICS:
            row[m], row[f"{m}_low"], row[f"{m}_high"] = bootstrap_interval(boot[a][1][m] - boot[b][1][m],
                                                                           boot[a][0][m] - boot[b][0][m])
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--skip-run", action="store_true", help="compare finished runs only")
    args = ap.parse_args()
    dataset = yaml.safe_load(args.config.read_text())["dataset"]
    if not args.skip_run:
        for arm in args.arms:
            run_arm(args.config.resolve(), dataset, arm, args.cores)
    table = compare(dataset, args.arms)
    out = ROOT / "bench" / "out" / f"pretrain_ablation_{dataset}.csv"
    out.parent.mkdir(exist_ok=True)
    table.to_csv(out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        print(table.drop(columns=[c for c in table.columns if c.startswith("auroc")]).to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
