"""Levers for the graph models (the evaluation issue), each judged on validation donors only.

Data: the simulator's ``severity`` preset (``config/severity.yaml``'s data section; ``--cells``
overrides its size), the schema's preprocessing, split mode ``donor_cv`` with ``--folds`` folds
(split seed 0; every donor tested once). In each fold the validation cells are whole training
donors held back (``graph.validation``), so every decision below sees training donors only.

Arms (graph settings over the schema's defaults; the GAT with the schema's hyperparameters,
``--max-epochs`` / ``--patience``, model seeds ``--seeds``):

- ``base``: kNN graph on the PCA, inductive (no edge between training and held-out cells);
- ``donor_standardize``: gene features centred and scaled within each donor;
- ``harmony``: the kNN graph on the Harmony-corrected PCA (donor as batch), inductive;
- ``harmony_transductive``: one kNN graph over every cell after Harmony, held-out donors joined
  to the training donors as the original study joined batches with BBKNN (held-out labels unused);
- ``hvg_training``: node features = the ``--hvg`` most variable genes of the training cells;
- ``tuned``: the GAT's hyperparameters chosen per fold from ``GRID`` by validation balanced
  accuracy (one tuning seed, ``--tune-seed``), then trained with every seed.

Printed: each arm's validation balanced accuracy and its difference from ``base`` paired over
fold x seed (mean, 95% t-interval); a lever is **kept** when that interval lies above 0. Then the
held-out donors' balanced accuracy of every arm and of the two best baselines on this preset
(``pseudobulk``, ``logreg_cv``), pooled over folds, averaged over seeds, with 95% intervals from
resampling donors, and each arm's margin over ``pseudobulk`` paired on the same resamples. The
test numbers are reported, never used to choose. Writes ``bench/out/levers.csv``.

    python bench/levers.py                       # 3,000 cells, 12 donors, 4 folds, seeds 0-4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cellgnn.config import validate_config  # noqa: E402
from cellgnn.stats import bootstrap_interval, t_interval  # noqa: E402

ARMS = {
    "base": {},
    "donor_standardize": {"donor_standardize": True},
    "harmony": {"batch_correction": "harmony"},
    "harmony_transductive": {"batch_correction": "harmony", "graph_mode": "transductive"},
    "hvg_training": {"hvg_training": None},  # filled from --hvg
    "tuned": {},
}
GRID = [  # GAT settings tried by the tuned arm (the first is the schema's default)
    {},
    {"hidden": 16},
    {"weight_decay": 0.005},
    {"lr": 0.001},
    {"attn_dropout": 0.1, "weight_decay": 0.01},
]
BASELINES = ("pseudobulk", "logreg_cv")


def balanced_accuracy(graph: dict, proba: np.ndarray, mask: str) -> float:
    from cellgnn.metrics import classification_metrics

    m = graph[mask].numpy()
    return classification_metrics(graph["y"].numpy()[m], proba[m])["balanced_accuracy"]


def held_out(graph: dict, proba: np.ndarray) -> pd.DataFrame:
    """Test cells of one unit as the train rule writes them (``cellgnn.train.predictions_table``)."""
    from cellgnn.train import predictions_table

    table = predictions_table(graph, proba)
    return table[table["split"] == "test"].reset_index(drop=True)


def fit(graph: dict, name: str, tcfg: dict, seed: int, params: dict | None = None):
    from cellgnn.train import train_model

    cfg = {**tcfg, "hyperparameters": {name: params}} if params else tcfg
    return train_model(graph, name, cfg, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=3000)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--tune-seed", type=int, default=100)
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--hvg", type=int, default=500)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "levers.csv"))
    args = ap.parse_args()

    import torch

    from cellgnn.data import load_dataset
    from cellgnn.design import split_units
    from cellgnn.graph import build_graph
    from cellgnn.heldout import bootstrap_over_donors
    from cellgnn.preprocess import preprocess

    torch.set_num_threads(args.threads)
    sev = yaml.safe_load((ROOT / "config" / "severity.yaml").read_text())
    sev["data"]["simulate"]["n_cells"] = args.cells
    cfg = validate_config({"dataset": "levers", "data": sev["data"],
                           "graph": {"split_modes": ["donor_cv"], "cv_folds": args.folds},
                           "train": {"max_epochs": args.max_epochs, "patience": args.patience}})
    t0 = time.perf_counter()
    adata = preprocess(load_dataset(cfg["data"]), cfg["preprocess"], seed=cfg["seed"])[0]
    units = split_units(["donor_cv"], adata.obs["donor"].nunique(), args.folds)
    print(f"severity preset: {adata.n_obs} cells x {adata.n_vars} genes, {adata.obs['donor'].nunique()} donors, "
          f"units {units}; GAT <= {args.max_epochs} epochs (patience {args.patience}), seeds {args.seeds} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    tcfg = cfg["train"]
    rows, preds = [], {}
    for arm in args.arms:
        over = dict(ARMS[arm])
        if arm == "hvg_training":
            over["hvg_training"] = args.hvg
        for unit in units:
            g = build_graph(adata, {**cfg["graph"], **over}, unit, cfg["seed"])
            params = None
            if arm == "tuned":
                scores = [balanced_accuracy(g, fit(g, "gat", tcfg, args.tune_seed, p).proba, "val_mask") for p in GRID]
                params = GRID[int(np.argmax(scores))]
                print(f"  {unit} tuned on validation: {params or 'defaults'} "
                      f"({' '.join(f'{s:.3f}' for s in scores)})", flush=True)
            for seed in args.seeds:
                r = fit(g, "gat", tcfg, seed, params)
                val = balanced_accuracy(g, r.proba, "val_mask")
                rows.append({"arm": arm, "unit": unit, "seed": seed, "val_balanced_accuracy": val,
                             "test_balanced_accuracy": r.metrics["balanced_accuracy"], "best_epoch": r.best_epoch,
                             "params": str(params or {}), "seconds": r.seconds})
                preds.setdefault(arm, {}).setdefault(seed, []).append(held_out(g, r.proba))
            print(f"  {arm} {unit}: validation balanced accuracy "
                  f"{np.mean([x['val_balanced_accuracy'] for x in rows if x['arm'] == arm and x['unit'] == unit]):.3f}"
                  f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    base_graphs = {u: build_graph(adata, cfg["graph"], u, cfg["seed"]) for u in units}
    for name in BASELINES:
        for unit, g in base_graphs.items():
            r = fit(g, name, tcfg, args.seeds[0])
            for seed in args.seeds:  # deterministic: one fit per fold, recorded under every seed
                preds.setdefault(name, {}).setdefault(seed, []).append(held_out(g, r.proba))
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)

    print("\n### Validation donors (the decision): GAT balanced accuracy, mean over folds x seeds\n")
    print("| arm | validation | minus base, paired (95% t-interval over folds x seeds) | kept |\n|---|---|---|---|")
    wide = df.pivot_table(index=["unit", "seed"], columns="arm", values="val_balanced_accuracy")
    for arm in args.arms:
        v = t_interval(wide[arm])
        if arm == "base":
            print(f"| base | {v.mean:.3f} [{v.low:.3f}, {v.high:.3f}] | — | — |")
            continue
        d = t_interval(wide[arm] - wide["base"])
        print(f"| {arm} | {v.mean:.3f} [{v.low:.3f}, {v.high:.3f}] | {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | "
              f"{'yes' if d.low > 0 else 'no'} |")

    print("\n### Held-out donors (reported, not used to choose): balanced accuracy pooled over folds, mean over "
          "seeds, 95% interval from resampling donors\n")
    classes = list(base_graphs[units[0]]["classes"])
    boot = {name: bootstrap_over_donors({s: pd.concat(v) for s, v in p.items()}, classes) for name, p in preds.items()}
    print("| model | held-out balanced accuracy | minus pseudobulk (paired) |\n|---|---|---|")
    ref_reps, ref_point = boot["pseudobulk"]
    for name, (reps, point) in boot.items():
        b = bootstrap_interval(point["balanced_accuracy"], reps["balanced_accuracy"])
        d = bootstrap_interval(point["balanced_accuracy"] - ref_point["balanced_accuracy"],
                               reps["balanced_accuracy"] - ref_reps["balanced_accuracy"])
        label = f"GAT, {name}" if name in ARMS else name
        print(f"| {label} | {b.mean:.3f} [{b.low:.3f}, {b.high:.3f}] | "
              + ("—" if name == "pseudobulk" else f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]") + " |")
    print(f"\n{time.perf_counter() - t0:.0f} s in all; per-run table: {args.out}")


if __name__ == "__main__":
    main()
