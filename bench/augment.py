"""Wall time of ACTIVA and of the scGAN baseline to reach their best validation score, in one run.

Both generators train on the same training cells; every ``eval_every`` epochs each is scored
by the MMD (principal components of the training cells) between generated cells and the
validation cells (lower is better). Scoring time is excluded from the training clock.
Printed: each model's best score, the training seconds at which it was first reached, their
ratio (GAN / ACTIVA; the ACTIVA paper reports ~17× on Brain Small), and, because "best
within a budget" depends on the budget, also the seconds each needs to first reach the
score that BOTH reach (the worse of the two bests) and that ratio.

    python bench/augment.py                      # simulated default data, random cell split
    python bench/augment.py --adata results/demo/preprocessed.h5ad --graph results/demo/graph/cells.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cellgnn.augment.activa import ActivaConfig, ActivaTrainer, generate  # noqa: E402
from cellgnn.augment.data import library_normalize, load_expression, split_masks  # noqa: E402
from cellgnn.augment.evaluate import PcaSpace, mmd_pcs  # noqa: E402
from cellgnn.augment.gan import GanConfig, GanTrainer, generate_gan  # noqa: E402
from cellgnn.utils import set_threads  # noqa: E402


def _data(args):
    if args.adata:
        import torch

        split = torch.load(args.graph, weights_only=False)
        train_ids = {c for c, m in zip(split["cell_ids"], np.asarray(split["train_mask"])) if m}
        d = load_expression(args.adata, max_genes=args.max_genes, rank_cells=train_ids)
        m = split_masks(d.cell_ids, split)
        return d.x[m["train"]], d.y(d.classes)[m["train"]], d.classes, d.x[m["val"]]
    from cellgnn.data.simulate import simulate

    a = simulate(seed=args.seed)
    x = library_normalize(a.X)
    var = np.log1p(x).var(0)
    x = library_normalize(a.X[:, np.sort(np.argsort(-var)[:args.max_genes])])
    lab = a.obs["cell_type"].astype(str).to_numpy()
    classes = sorted(set(lab))
    y = np.array([classes.index(c) for c in lab])
    u = np.random.default_rng(args.seed).random(len(y))
    return x[u < 0.7], y[u < 0.7], classes, x[(u >= 0.7) & (u < 0.85)]


def first_reach(history, level):
    for r in history:
        if "val_score" in r and r["val_score"] <= level:
            return r["train_seconds"]
    return float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adata")
    p.add_argument("--graph")
    p.add_argument("--max-genes", type=int, default=500)
    p.add_argument("--activa-epochs", type=int, default=30)
    p.add_argument("--gan-epochs", type=int, default=90)
    p.add_argument("--hidden", type=int, nargs=3, default=[256, 128, 64])
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args()
    set_threads(args.threads)
    x_tr, y_tr, classes, x_val = _data(args)
    pca = PcaSpace(x_tr, 50, args.seed)
    val_pcs = pca.transform(x_val)
    n = min(500, len(x_val))

    def score(sample):
        return lambda m: mmd_pcs(val_pcs, pca.transform(sample(m, n)), seed=args.seed)

    common = dict(hidden=list(args.hidden), latent=args.latent, seed=args.seed)
    t0 = time.perf_counter()
    act = ActivaTrainer(x_tr, y_tr, classes, ActivaConfig(epochs=args.activa_epochs, warmup_epochs=max(1, args.activa_epochs // 3),
                                                          lr=1e-3, clf_lr=1e-3, **common))
    act.fit(score(lambda m, k: generate(m, k, seed=args.seed)), progress=False)
    gan = GanTrainer(x_tr, GanConfig(epochs=args.gan_epochs, **common))
    gan.fit(score(lambda g, k: generate_gan(g, k, seed=args.seed)), progress=False)
    out = {}
    for name, h in (("ACTIVA", act.history), ("scGAN", gan.history)):
        best = min((r for r in h if "val_score" in r), key=lambda r: r["val_score"])
        out[name] = {"best_val_mmd": best["val_score"], "best_epoch": best["epoch"],
                     "seconds_to_best": best["train_seconds"], "total_seconds": h[-1]["train_seconds"],
                     "epochs": len(h)}
    common_level = max(out["ACTIVA"]["best_val_mmd"], out["scGAN"]["best_val_mmd"])
    for name, h in (("ACTIVA", act.history), ("scGAN", gan.history)):
        out[name]["seconds_to_common_level"] = first_reach(h, common_level)
    out["ratio_seconds_to_best_gan_over_activa"] = out["scGAN"]["seconds_to_best"] / out["ACTIVA"]["seconds_to_best"]
    out["common_level_mmd"] = common_level
    out["ratio_seconds_to_common_level_gan_over_activa"] = (out["scGAN"]["seconds_to_common_level"]
                                                           / out["ACTIVA"]["seconds_to_common_level"])
    out["setup"] = {"cells_train": int(len(x_tr)), "cells_val": int(len(x_val)), "genes": int(x_tr.shape[1]),
                    **vars(args), "wall_seconds": time.perf_counter() - t0}
    print(f"{'model':8s} {'best val MMD':>12s} {'epoch':>6s} {'s to best':>10s} {'s total':>8s} {'s to common':>12s}")
    for name in ("ACTIVA", "scGAN"):
        r = out[name]
        print(f"{name:8s} {r['best_val_mmd']:12.4g} {r['best_epoch']:6d} {r['seconds_to_best']:10.1f} "
              f"{r['total_seconds']:8.1f} {r['seconds_to_common_level']:12.1f}")
    print(f"ratio (scGAN / ACTIVA) seconds to best: {out['ratio_seconds_to_best_gan_over_activa']:.2f}x; "
          f"to the common level MMD {common_level:.4g}: {out['ratio_seconds_to_common_level_gan_over_activa']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
