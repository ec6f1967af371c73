"""The augmentation stage: train ACTIVA and the scGAN baseline, generate, evaluate, rare-population run.

Reads ``preprocessed.h5ad`` (raw counts in ``layers["counts"]``) and the graph stage's split
(``graph/{split}.pt``: train cells train the generators, validation cells score them
during training, test cells are the held-out reference of every metric). Writes:

- ``activa.pt``: the trained ACTIVA (``load_activa``),
- ``synthetic.h5ad``: generated cells (data units: counts normalized to ``target_sum``),
  ``obs["source"]`` ∈ {``ACTIVA population``, ``ACTIVA``, ``scGAN``}, ``obs[population_key]``
  (the requested population, or ACTINN's call for unconditional ACTIVA cells, ``unknown``
  for scGAN),
- ``metrics.json``: ACTIVA vs scGAN vs real training cells (positive control) against the
  test cells, training times, the rare-population summary (mean F1, 95% CI over seeds).
  With ``sample_counts`` (default) both generators' cells pass through a Poisson
  observation step (:func:`~cellgnn.augment.data.sample_counts`) before every use, and the
  metrics of their raw outputs are reported too (``"ACTIVA (raw)"``, ``"scGAN (raw)"``),
- ``rare_population.csv`` and three figures.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..errors import CellgnnInputError
from ..io import write_csv, write_h5ad, write_json
from ..utils import seed_everything, set_threads
from .activa import ActivaConfig, ActivaTrainer, generate
from .data import load_expression, resolve_population, sample_counts, split_masks
from .evaluate import PcaSpace, evaluate_synthetic, mmd_pcs
from .gan import GanConfig, GanTrainer, generate_gan
from .rare import RareConfig, check_rare, rare_population_experiment, summarize_rare

LOG = logging.getLogger("cellgnn.augment")


def _dataclass_from(cls, d: dict | None, **extra):
    names = {f.name for f in fields(cls)}
    d = dict(d or {})
    unknown = set(d) - names
    if unknown:
        raise CellgnnInputError(f"unknown keys {sorted(unknown)}", field=f"augment.{cls.__name__}",
                                fix=f"use only {sorted(names)}")
    d.update({k: v for k, v in extra.items() if k in names})
    return cls(**d)


def configs_from(cfg: dict) -> tuple[ActivaConfig, GanConfig, RareConfig]:
    """Build the three dataclass configs from the ``augment:`` config section."""
    common = {"seed": cfg.get("seed", 0), "device": cfg.get("device", "auto")}
    return (_dataclass_from(ActivaConfig, cfg.get("activa"), **common),
            _dataclass_from(GanConfig, cfg.get("gan"), **common),
            _dataclass_from(RareConfig, cfg.get("rare")))


def best_val(history: list[dict]) -> dict:
    """Epoch, score and cumulative training seconds at the best (lowest) validation score."""
    rows = [r for r in history if "val_score" in r]
    if not rows:
        return {}
    best = min(rows, key=lambda r: r["val_score"])
    return {"epoch": best["epoch"], "val_mmd": best["val_score"], "train_seconds": best["train_seconds"],
            "total_train_seconds": history[-1]["train_seconds"]}


def load_split(path: str | Path) -> dict:
    """The graph stage's split (dict with ``cell_ids`` and masks)."""
    import torch

    g = torch.load(path, map_location="cpu", weights_only=False)
    missing = [k for k in ("cell_ids", "train_mask", "val_mask", "test_mask") if k not in g]
    if missing:
        raise CellgnnInputError(f"missing keys {missing}", file=str(path), fix="rebuild the graph stage")
    return g


def run_augment(preprocessed: str | Path, graph: str | Path, outputs: dict[str, str], cfg: dict,
                checkpoint: str | Path | None = None, threads: int = 1, progress: bool = True) -> dict:
    """Run the whole stage; ``outputs`` keys: model, synthetic, metrics, rare, umap, auc, rare_plot."""
    set_threads(threads)
    activa_cfg, gan_cfg, rare_cfg = configs_from(cfg)
    key = cfg.get("population_key", "cell_type")
    split = load_split(graph)
    train_ids = {c for c, m in zip(split["cell_ids"], np.asarray(split["train_mask"])) if m}
    data = load_expression(preprocessed, key, genes=cfg.get("genes", "hvg"),
                           target_sum=cfg.get("target_sum", 20000.0), max_genes=cfg.get("max_genes"),
                           rank_cells=train_ids)
    masks = split_masks(data.cell_ids, split, file=str(graph))
    tr, va, te = masks["train"], masks["val"], masks["test"]
    population = resolve_population(data.labels[tr], cfg.get("population"), cfg.get("min_cells", 20),
                                    key=key, file=str(preprocessed))
    check_rare(rare_cfg, data.labels[te], population)
    if va.sum() < 2 or te.sum() < cfg.get("eval", {}).get("n_folds", 5):
        raise CellgnnInputError("too few validation/test cells to score the generators", file=str(graph),
                                fix="use a split with more held-out cells")
    seed = int(cfg.get("seed", 0))
    ev = cfg.get("eval", {})
    classes = data.classes
    x_tr, lab_tr = data.x[tr], data.labels[tr]
    x_va, x_te, lab_te = data.x[va], data.x[te], data.labels[te]
    LOG.info("augment: %d train / %d val / %d test cells, %d genes, population '%s' (%d train cells)",
             tr.sum(), va.sum(), te.sum(), data.x.shape[1], population, (lab_tr == population).sum())

    seed_everything(seed)
    pca = PcaSpace(x_tr, ev.get("n_pcs", 50), seed)
    n_val = int(min(ev.get("n_val_cells", 500), len(x_va)))
    val_pcs = pca.transform(x_va)

    def score(sample):
        return lambda model: mmd_pcs(val_pcs, pca.transform(sample(model, n_val)), seed=seed)

    # ----- ACTIVA -----
    activa = ActivaTrainer(x_tr, data.y(classes)[tr], classes, activa_cfg, checkpoint=checkpoint)
    activa.fit(score(lambda m, n: generate(m, n, seed=seed)), progress=progress)
    activa.save(outputs["model"])
    # ----- scGAN -----
    gan = GanTrainer(x_tr, gan_cfg, target_sum=data.target_sum)
    gan.fit(score(lambda g, n: generate_gan(g, n, seed=seed)), progress=progress)

    # ----- synthetic cells and metrics on the test cells -----
    n_te = len(x_te)
    raw = {"ACTIVA": generate(activa.model, n_te, seed=seed + 7),
           "scGAN": generate_gan(gan.generator, n_te, seed=seed + 7)}
    lib_tr = data.library_size[tr] if cfg.get("sample_counts", True) else None
    synth = raw if lib_tr is None else {k: sample_counts(v, lib_tr, seed + 8, data.target_sum)
                                        for k, v in raw.items()}
    rng = np.random.default_rng(seed)
    control = x_tr[rng.choice(len(x_tr), size=min(n_te, len(x_tr)), replace=False)]
    kw = dict(n_folds=ev.get("n_folds", 5), n_trees=ev.get("n_trees", 200),
              n_top_markers=ev.get("n_top_markers", 5), seed=seed)
    results = {name: evaluate_synthetic(x_te, s, x_tr, lab_tr, pca, **kw) for name, s in synth.items()}
    if lib_tr is not None:  # the generators' outputs without the observation step, for reference
        results.update({f"{name} (raw)": evaluate_synthetic(x_te, s, x_tr, lab_tr, pca, **kw)
                        for name, s in raw.items()})
    results["real (train)"] = evaluate_synthetic(x_te, control, x_tr, lab_tr, pca, **kw)
    for name, trainer in (("ACTIVA", activa), ("scGAN", gan)):
        results[name]["training"] = best_val(trainer.history)

    in_pop = lab_tr == population
    pop_cells = generate(activa.model, int(cfg.get("n_generate", 500)), classes, population,
                         cfg.get("generation", "posterior"), x_population=x_tr[in_pop],
                         threshold=cfg.get("accept_threshold", 0.5), seed=seed + 11)
    if lib_tr is not None:
        pop_cells = sample_counts(pop_cells, lib_tr[in_pop], seed + 12, data.target_sum)
    _write_synthetic(outputs["synthetic"], data, key, population, pop_cells, synth, activa, classes)

    # ----- rare population -----
    rare = rare_population_experiment(x_tr, lab_tr, x_te, lab_te, population, activa_cfg, rare_cfg,
                                      library_sizes=lib_tr, target_sum=data.target_sum, progress=progress)
    write_csv(rare, outputs["rare"])
    rare_summary = summarize_rare(rare)

    # ----- figures -----
    from .figures import plot_auc, plot_rare, plot_umap

    plot_umap(*_umap(pca, x_te, synth, seed), outputs["umap"])
    plot_auc({k: results[k] for k in ("real (train)", "ACTIVA", "scGAN", "ACTIVA (raw)", "scGAN (raw)")
              if k in results}, outputs["auc"])
    plot_rare(rare_summary, outputs["rare_plot"])

    metrics = {"population_key": key, "population": population, "split": split.get("split_mode"),
               "reference": "test cells", "n_genes": int(data.x.shape[1]), "seed": seed,
               "sample_counts": lib_tr is not None,
               "generators": results, "rare_population": {"summary": rare_summary,
                                                          "seeds": list(rare_cfg.seeds),
                                                          "n_synthetic": rare_cfg.n_synthetic},
               "activa_history": activa.history, "gan_history": gan.history}
    write_json(metrics, outputs["metrics"])
    return metrics


def _umap(pca: PcaSpace, x_te: np.ndarray, synth: dict[str, np.ndarray], seed: int):
    import umap

    parts = [("real", x_te)] + list(synth.items())
    pcs = np.vstack([pca.transform(x) for _, x in parts])
    source = np.concatenate([[name] * len(x) for name, x in parts])
    emb = umap.UMAP(n_neighbors=15, random_state=seed, n_jobs=1).fit_transform(pcs)
    return emb, source


def _write_synthetic(path, data, key: str, population: str, pop_cells: np.ndarray,
                     synth: dict[str, np.ndarray], activa: ActivaTrainer, classes: list[str]) -> None:
    import anndata as ad
    import pandas as pd
    import torch

    with torch.no_grad():
        dev = activa.model.gene_scale.device
        calls = activa.model.classify(torch.as_tensor(synth["ACTIVA"], device=dev)).argmax(1).cpu().numpy()
    x = np.vstack([pop_cells, synth["ACTIVA"], synth["scGAN"]])
    source = (["ACTIVA population"] * len(pop_cells) + ["ACTIVA"] * len(synth["ACTIVA"])
              + ["scGAN"] * len(synth["scGAN"]))
    pops = [population] * len(pop_cells) + [classes[i] for i in calls] + ["unknown"] * len(synth["scGAN"])
    obs = pd.DataFrame({"source": pd.Categorical(source), key: pd.Categorical(pops)},
                       index=[f"synthetic{i:06d}" for i in range(len(x))])
    adata = ad.AnnData(X=x.astype(np.float32), obs=obs, var=pd.DataFrame(index=data.genes))
    adata.uns["augment"] = {"units": f"counts normalized to {data.target_sum:g} per cell, not logged",
                            "population": population}
    write_h5ad(adata, path)
