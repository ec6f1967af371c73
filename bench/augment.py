"""ACTIVA vs the scGAN baseline: realism on held-out cells and wall time to the best validation score.

For each seed, in one process (so that the seconds of the two generators are comparable):
ACTIVA, then scGAN, train on the same training cells, each scored every ``eval_every`` epochs
by the MMD between generated and validation cells (the best epoch is kept; scoring time is
excluded from the training clock). Then as many cells as there are held-out test cells are
generated and compared with them as in the ACTIVA paper: 5-fold random-forest ROC AUC
(real vs synthetic; 0.5 = indistinguishable), correlation discrepancy of the marker genes
(lower is better) and MMD on principal components; real training cells are the positive
control. Printed: one row per generator and seed, mean [95% t-interval over seeds], and the
seconds each generator needed to reach its best validation score with their ratio (the ACTIVA
paper reports ~17x on Brain Small, ~6x on 68K PBMC, on a GPU).

Data (``--data``):

- ``default``: the workflow's preprocessed cells and split (``--adata``, ``--graph``; run
  ``snakemake --cores 2 results/demo/graph/cells.pt`` first), all populations, unconditional;
  plus ACTIVA's cells of ``augment.population`` against the test cells of that population.
- ``kang``: one population (``--population``) of Kang et al. 2018 (``--kang``), its cells split
  at random into 70 % train / 10 % validation / 20 % held-out test (``--split-seed``), the
  ``augment.max_genes`` most variable genes of the training cells; ACTINN's classes are the
  condition (ctrl / stim).

Settings come from the ``augment`` section of ``--config`` files (merged in order like
Snakemake's ``--configfile``), overridden by ``--set section.key=value``.

Extra reports: ``--diagnose N`` (first seed: what a forest uses to separate each generator's
cells from real ones, with the N most important genes), ``--observations`` (first seed: ACTIVA's
cells observed through its NB, through Poisson noise, without noise, and through its NB with
real library sizes), ``--curve K`` (first seed, retrained: RF AUC of generated vs validation
cells against training seconds, every K epochs), ``--figure PATH`` (first seed: UMAP of the test
cells with both generators' cells, on the principal components of the training cells).

    python bench/augment.py --data default --adata results/demo/preprocessed.h5ad \\
        --graph results/demo/graph/cells.pt --seeds 0 1 2 --diagnose 8 --observations
    python bench/augment.py --data kang --population "CD14+ Monocytes" --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cellgnn.augment.activa import generate  # noqa: E402
from cellgnn.augment.data import (library_normalize, load_expression, resolve_population,  # noqa: E402
                                  split_masks, top_variable_genes)
from cellgnn.augment.evaluate import PcaSpace, evaluate_synthetic, rf_auc, separating_features  # noqa: E402
from cellgnn.augment.stage import configs_from, scgan_cells, train_generators  # noqa: E402
from cellgnn.stats import t_interval  # noqa: E402
from cellgnn.utils import seed_everything, set_threads  # noqa: E402


def load_config(paths: list[str], overrides: list[str]) -> dict:
    """The ``augment`` section of the merged config files, with ``section.key=value`` overrides (YAML values)."""
    import yaml

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    cfg: dict = {}
    for p in paths:
        cfg = merge(cfg, yaml.safe_load(Path(p).read_text()) or {})
    aug = cfg.get("augment", {})
    for item in overrides:
        key, value = item.split("=", 1)
        *parents, last = key.split(".")
        d = aug
        for part in parents:
            d = d.setdefault(part, {})
        d[last] = yaml.safe_load(value)
    return aug


def default_data(args, aug: dict) -> dict:
    import torch

    split = torch.load(args.graph, weights_only=False)
    train_ids = {c for c, m in zip(split["cell_ids"], np.asarray(split["train_mask"])) if m}
    d = load_expression(args.adata, aug.get("population_key", "cell_type"), genes=aug.get("genes", "hvg"),
                        max_genes=aug.get("max_genes"), rank_cells=train_ids)
    m = split_masks(d.cell_ids, split)
    tr = m["train"] & (d.library_size > 0)
    population = resolve_population(d.labels[tr], aug.get("population"), aug.get("min_cells", 20))
    return {"name": f"default ({Path(args.adata).parent.name}, split {split.get('split_mode')})",
            "x": d.x, "lib": d.library_size, "labels": d.labels, "genes": d.genes, "train": tr,
            "val": m["val"], "test": m["test"], "population": population}


def kang_data(args, aug: dict) -> dict:
    import anndata as ad
    import scipy.sparse as sp

    a = ad.read_h5ad(args.kang)
    a = a[a.obs["cell_type"].astype(str) == args.population]
    if a.n_obs == 0:
        raise SystemExit(f"no cells of '{args.population}' in {args.kang}")
    u = np.random.default_rng(args.split_seed).random(a.n_obs)
    train, val, test = u < 0.7, (u >= 0.7) & (u < 0.8), u >= 0.8
    counts = sp.csr_matrix(a.X)
    genes = top_variable_genes(counts[train], aug.get("max_genes") or counts.shape[1], aug.get("target_sum", 20000))
    counts = counts[:, genes].toarray().astype(np.float32)
    lib = counts.sum(1).astype(np.float64)
    return {"name": f"Kang 2018 {args.population} (random 70/10/20 split, seed {args.split_seed})",
            "x": library_normalize(counts, aug.get("target_sum", 20000)), "lib": lib,
            "labels": a.obs["condition"].astype(str).to_numpy(), "genes": a.var_names[genes].tolist(),
            "train": train & (lib > 0), "val": val, "test": test, "population": None}


def run_seed(d: dict, aug: dict, seed: int, args) -> dict:
    """Train both generators with ``seed``; metrics of each (and the control) against the test cells."""
    activa_cfg, gan_cfg, _ = configs_from({**aug, "seed": seed, "device": args.device})
    ev = aug.get("eval", {})
    tr, va, te = d["train"], d["val"], d["test"]
    x_tr, lib_tr, lab_tr, x_va, x_te = d["x"][tr], d["lib"][tr], d["labels"][tr], d["x"][va], d["x"][te]
    classes = sorted(set(lab_tr.tolist()))
    y_tr = np.array([classes.index(c) for c in lab_tr])
    seed_everything(seed)
    pca = PcaSpace(x_tr, ev.get("n_pcs", 50), seed)
    gan_lib = lib_tr if aug.get("sample_counts", True) else None
    t0 = time.perf_counter()
    activa, gan = train_generators(x_tr, lib_tr, y_tr, classes, x_va, pca, activa_cfg, gan_cfg, genes=d["genes"],
                                   target_sum=aug.get("target_sum", 20000.0), gan_library=gan_lib,
                                   n_val=ev.get("n_val_cells", 500), seed=seed, progress=False)
    wall = time.perf_counter() - t0
    n = len(x_te)
    synth = {"ACTIVA": generate(activa.model, n, seed=seed + 7),
             "scGAN": scgan_cells(gan.generator, n, seed + 7, gan_lib)}
    control = x_tr[np.random.default_rng(seed).choice(len(x_tr), size=min(n, len(x_tr)), replace=False)]
    kw = dict(n_folds=ev.get("n_folds", 5), n_trees=ev.get("n_trees", 200), n_top_markers=ev.get("n_top_markers", 5),
              seed=seed, n_jobs=args.threads)
    out = {name: evaluate_synthetic(x_te, s, x_tr, lab_tr, pca, **kw) for name, s in synth.items()}
    out["real (train)"] = evaluate_synthetic(x_te, control, x_tr, lab_tr, pca, **kw)
    if d["population"] is not None:
        x_pop = x_te[d["labels"][te] == d["population"]]
        cells = generate(activa.model, len(x_pop), classes, d["population"], aug.get("generation", "posterior"),
                         x_population=x_tr[lab_tr == d["population"]],
                         threshold=aug.get("accept_threshold", 0.5), seed=seed + 11)
        out[f"ACTIVA ({d['population']})"] = evaluate_synthetic(x_pop, cells, x_tr, lab_tr, pca, **kw)
    for name, trainer in (("ACTIVA", activa), ("scGAN", gan)):
        best = trainer.best
        row = next(r for r in trainer.history if r["epoch"] == best["epoch"])
        out[name]["training"] = {"best_epoch": best["epoch"], "best_val_mmd": best["score"],
                                 "seconds_to_best": row["train_seconds"],
                                 "total_seconds": trainer.history[-1]["train_seconds"],
                                 "epochs": len(trainer.history)}
    out["wall_seconds_training"] = wall
    if seed == args.seeds[0] and args.figure:
        from cellgnn.augment.figures import plot_embedding
        from cellgnn.augment.stage import embed_cells

        plot_embedding(*embed_cells(pca, x_te, synth, "umap", seed), "umap", args.figure)
    if seed == args.seeds[0] and args.diagnose:
        out["diagnosis"] = {name: separating_features(x_te, s, d["genes"], n_top=args.diagnose, seed=seed, pca=pca)
                            for name, s in {**synth, "real (train)": control}.items()}
    if seed == args.seeds[0] and args.observations:
        variants = {"nb": {}, "poisson": {"observation": "poisson"}, "mean (no noise)": {"observation": "mean"},
                    "nb, real library sizes": {"library_sizes": lib_tr}}
        out["observations"] = {k: rf_auc(x_te, generate(activa.model, n, seed=seed + 7, **v), n_trees=kw["n_trees"],
                                         seed=seed, n_jobs=args.threads)["mean"] for k, v in variants.items()}
    return out


def auc_curve(d: dict, aug: dict, seed: int, every: int, args) -> dict[str, list[tuple[float, float]]]:
    """RF AUC (generated vs validation cells) against cumulative training seconds, every ``every`` epochs."""
    from cellgnn.augment.activa import ActivaTrainer
    from cellgnn.augment.gan import GanTrainer

    activa_cfg, gan_cfg, _ = configs_from({**aug, "seed": seed, "device": args.device})
    tr, va = d["train"], d["val"]
    x_tr, lab_tr, x_va = d["x"][tr], d["labels"][tr], d["x"][va]
    classes = sorted(set(lab_tr.tolist()))
    gan_lib = d["lib"][tr] if aug.get("sample_counts", True) else None
    ts = aug.get("target_sum", 20000.0)
    n_trees = aug.get("eval", {}).get("n_trees", 200)
    seed_everything(seed)
    act = ActivaTrainer(x_tr, d["lib"][tr], np.array([classes.index(c) for c in lab_tr]), classes,
                        replace(activa_cfg, eval_every=every), genes=d["genes"], target_sum=ts)
    gan = GanTrainer(x_tr, replace(gan_cfg, eval_every=every), target_sum=ts)
    out: dict[str, list] = {"ACTIVA": [], "scGAN": []}

    def point(name, trainer, cells):
        out[name].append((trainer.train_seconds, rf_auc(x_va, cells, n_trees=n_trees, seed=seed,
                                                        n_jobs=args.threads)["mean"]))
        return out[name][-1][1]

    act.fit(lambda m: point("ACTIVA", act, generate(m, len(x_va), seed=seed)), progress=False)
    gan.fit(lambda g: point("scGAN", gan, scgan_cells(g, len(x_va), seed, gan_lib, ts)), progress=False)
    return out


def mean_ci(values) -> dict:
    """Mean and 95% t-interval over seeds (no interval for one seed: :mod:`cellgnn.stats`)."""
    ci = t_interval(values)
    return {"mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "n": len(values)}


def _fmt(ci: dict, digits: int = 3) -> str:
    return f"{ci['mean']:.{digits}f} [{ci['ci_low']:.{digits}f}, {ci['ci_high']:.{digits}f}]"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["default", "kang"], default="default")
    p.add_argument("--adata", default="results/demo/preprocessed.h5ad")
    p.add_argument("--graph", default="results/demo/graph/cells.pt")
    p.add_argument("--kang", default=str(ROOT.parent / "shared/data/kang2018/kang2018_pbmc_ifnb.h5ad"))
    p.add_argument("--population", default="CD14+ Monocytes")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--config", nargs="+", default=[str(ROOT / "config/config.yaml")])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--diagnose", type=int, default=0, metavar="N_GENES", help="top genes to print (0 = no)")
    p.add_argument("--observations", action="store_true")
    p.add_argument("--curve", type=int, default=0, metavar="EVERY",
                   help="AUC-vs-seconds curve on validation cells, every EVERY epochs (first seed; 0 = no)")
    p.add_argument("--figure", help="PNG (+ PDF) path: UMAP of the test cells and both generators' cells (first seed)")
    p.add_argument("--json")
    args = p.parse_args()
    set_threads(args.threads)
    aug = load_config(args.config, args.set)
    d = default_data(args, aug) if args.data == "default" else kang_data(args, aug)
    print(f"data: {d['name']}: {d['train'].sum()} train / {d['val'].sum()} val / {d['test'].sum()} test cells, "
          f"{d['x'].shape[1]} genes; seeds {args.seeds}; config {args.config} {args.set}")
    print(f"\n{'generator':24s} {'seed':>4s} {'RF AUC (5-fold) [95% over folds]':>34s} {'MMD':>8s} "
          f"{'corr. discr.':>12s}", flush=True)
    runs = {}
    for s in args.seeds:  # each seed's rows as soon as it is done
        runs[s] = r = run_seed(d, aug, s, args)
        names = [k for k in r if isinstance(r[k], dict) and "rf_auc" in r[k]]
        for name in names:
            m = r[name]
            print(f"{name:24s} {s:4d} {_fmt(m['rf_auc']):>34s} {m['mmd_pcs']:8.4f} "
                  f"{m['correlation_discrepancy']:12.3f}", flush=True)
    summary = {}
    print(f"\nmean [95% t-interval over seeds {args.seeds}], held-out test cells:")
    for name in names:
        summary[name] = {k: mean_ci([runs[s][name][k] if k != "rf_auc" else runs[s][name][k]["mean"]
                                     for s in args.seeds]) for k in ("rf_auc", "mmd_pcs", "correlation_discrepancy")}
        print(f"{name:24s} AUC {_fmt(summary[name]['rf_auc'])}  MMD {_fmt(summary[name]['mmd_pcs'], 4)}  "
              f"CD {_fmt(summary[name]['correlation_discrepancy'], 2)}")
    print("\nseconds of training to the best validation MMD (one process per seed, same machine):")
    ratios = []
    for s, r in runs.items():
        a, g = r["ACTIVA"]["training"], r["scGAN"]["training"]
        ratios.append(g["seconds_to_best"] / a["seconds_to_best"])
        print(f"seed {s}: ACTIVA {a['seconds_to_best']:.1f} s (epoch {a['best_epoch']}/{a['epochs']}, "
              f"MMD {a['best_val_mmd']:.4f}), scGAN {g['seconds_to_best']:.1f} s (epoch {g['best_epoch']}/"
              f"{g['epochs']}, MMD {g['best_val_mmd']:.4f}); ratio scGAN/ACTIVA {ratios[-1]:.2f}x")
    summary["ratio_seconds_to_best_scgan_over_activa"] = mean_ci(ratios)
    print(f"ratio scGAN/ACTIVA: {_fmt(summary['ratio_seconds_to_best_scgan_over_activa'], 2)}")
    first = runs[args.seeds[0]]
    if "observations" in first:
        print(f"\nACTIVA's cells by observation model (seed {args.seeds[0]}), RF AUC vs test cells:")
        for k, v in first["observations"].items():
            print(f"  {k:24s} {v:.3f}")
    if "diagnosis" in first:
        _print_diagnosis(first["diagnosis"])
    if args.curve:
        curve = auc_curve(d, aug, args.seeds[0], args.curve, args)
        summary["curve"] = curve
        print(f"\nRF AUC (generated vs validation cells) against training seconds, seed {args.seeds[0]}:")
        for name, pts in curve.items():
            print(f"  {name:8s} " + "  ".join(f"{t:.1f}s:{a:.3f}" for t, a in pts))
    if args.json:
        Path(args.json).write_text(json.dumps({"data": d["name"], "args": vars(args), "augment": aug,
                                               "runs": runs, "summary": summary}, indent=1, default=float) + "\n")


def _print_diagnosis(diag: dict) -> None:
    for name, dg in diag.items():
        mv = dg["mean_variance"]
        print(f"\nwhat separates {name} from the test cells: forest on per-cell summaries only: AUC "
              f"{dg['rf_auc_summaries']:.3f}; forest on the principal components: AUC {dg['rf_auc_pcs']:.3f}")
        for k, v in dg["cell_summaries"].items():
            print(f"  {k:14s} real {v['real']:9.3f}  synthetic {v['synthetic']:9.3f}  AUC alone {v['auc']:.3f}")
        print(f"  mean-variance over {mv['n_genes']} genes: median log2(mean synth/real) "
              f"{mv['median_log2_mean_ratio']:+.3f}, log2(var synth/real) {mv['median_log2_var_ratio']:+.3f}, "
              f"median CV2 real {mv['median_cv2_real']:.2f} synthetic {mv['median_cv2_synthetic']:.2f}")
        print(f"  top genes (summed importance {dg['top_genes_importance']:.3f}):")
        for g in dg["top_genes"]:
            print(f"    {g['gene']:12s} imp {g['importance']:.4f} AUC {g['auc']:.3f} mean {g['mean_real']:8.1f} / "
                  f"{g['mean_synthetic']:8.1f}  zeros {g['zero_real']:.2f} / {g['zero_synthetic']:.2f}  "
                  f"CV2 {g['cv2_real']:.2f} / {g['cv2_synthetic']:.2f}")


if __name__ == "__main__":
    main()
