"""The augmentation stage: train ACTIVA and the scGAN baseline, generate, evaluate, rare-population run.

Reads ``preprocessed.h5ad`` (raw counts in ``layers["counts"]``) and the graph stage's split
(``graph/{split}.pt``: train cells train the generators, validation cells score them
during training (the best-scoring epoch is kept), test cells are the held-out reference of
every metric). Writes:

- ``activa.pt``: the trained ACTIVA (``load_activa``),
- ``synthetic.h5ad``: generated cells (data units: counts normalized to ``target_sum``),
  ``obs["source"]`` ∈ {``ACTIVA population``, ``ACTIVA``, ``scGAN``}, ``obs[population_key]``
  (the requested population, or ACTINN's call for unconditional ACTIVA cells, ``unknown``
  for scGAN),
- ``metrics.json``: against the test cells, ACTIVA (unconditional, its own NB counts), scGAN
  (its normalized output, passed through Poisson counts with real library sizes when
  ``sample_counts``) and real training cells (positive control); ACTIVA's population cells
  against the test cells of the population; training seconds to the best validation score
  and their ratio; the rare-population summary (mean F1, 95% CI over seeds),
- ``rare_population.csv`` and three figures (real + synthetic embedding, AUC, rare F1).
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


def scgan_cells(generator, n: int, seed: int, library_sizes: np.ndarray | None = None,
                target_sum: float = 20000.0) -> np.ndarray:
    """``n`` scGAN cells ``[n, G]``: its normalized output, through Poisson counts when ``library_sizes`` is given."""
    x = generate_gan(generator, n, seed=seed)
    return x if library_sizes is None else sample_counts(x, library_sizes, seed + 1, target_sum)


def train_generators(x_tr: np.ndarray, lib_tr: np.ndarray, y_tr: np.ndarray, classes: list[str],
                     x_va: np.ndarray, pca: PcaSpace, activa_cfg: ActivaConfig, gan_cfg: GanConfig,
                     genes: list[str], target_sum: float = 20000.0, gan_library: np.ndarray | None = None,
                     n_val: int = 500, seed: int = 0, checkpoint: str | Path | None = None,
                     model_path: str | Path | None = None, progress: bool = True):
    """Train ACTIVA, then the scGAN baseline, on the same cells; returns the two trainers.

    Each is scored every ``eval_every`` epochs by the MMD (``pca`` space) between ``n_val``
    validation cells ``x_va`` and as many generated cells (scGAN's through Poisson counts with
    ``gan_library``), and keeps its best-scoring epoch. ACTIVA is saved to ``model_path``.
    """
    n_val = int(min(n_val, len(x_va)))
    val_pcs = pca.transform(x_va[np.random.default_rng(seed).permutation(len(x_va))[:n_val]])

    def score(sample):
        return lambda model: mmd_pcs(val_pcs, pca.transform(sample(model, n_val)), seed=seed)

    activa = ActivaTrainer(x_tr, lib_tr, y_tr, classes, activa_cfg, checkpoint=checkpoint, genes=genes,
                           target_sum=target_sum)
    activa.fit(score(lambda m, n: generate(m, n, seed=seed)), progress=progress)
    if model_path is not None:
        activa.save(model_path)
    gan = GanTrainer(x_tr, gan_cfg, target_sum=target_sum)
    gan.fit(score(lambda g, n: scgan_cells(g, n, seed, gan_library, target_sum)), progress=progress)
    return activa, gan


def run_augment(preprocessed: str | Path, graph: str | Path, outputs: dict[str, str], cfg: dict,
                checkpoint: str | Path | None = None, threads: int = 1, progress: bool = True) -> dict:
    """Run the whole stage; ``outputs`` keys: model, synthetic, metrics, rare, embedding, auc, rare_plot.

    ``threads``: the random forests' threads; torch and BLAS keep one (small networks and
    matrices, where a second thread only adds contention).
    """
    from threadpoolctl import threadpool_limits

    set_threads(1)
    with threadpool_limits(1, user_api="blas"):
        return _run_augment(preprocessed, graph, outputs, cfg, checkpoint, threads, progress)


def _run_augment(preprocessed, graph, outputs: dict[str, str], cfg: dict, checkpoint, threads: int,
                 progress: bool) -> dict:
    activa_cfg, gan_cfg, rare_cfg = configs_from(cfg)
    key = cfg.get("population_key", "cell_type")
    ev = cfg.get("eval", {})
    embedding = ev.get("embedding", "pca")
    if embedding not in {"pca", "umap"}:
        raise CellgnnInputError(f"unknown embedding '{embedding}'", field="augment.eval.embedding",
                                fix="use 'pca' or 'umap'")
    split = load_split(graph)
    train_ids = {c for c, m in zip(split["cell_ids"], np.asarray(split["train_mask"])) if m}
    data = load_expression(preprocessed, key, genes=cfg.get("genes", "hvg"),
                           target_sum=cfg.get("target_sum", 20000.0), max_genes=cfg.get("max_genes"),
                           rank_cells=train_ids)
    masks = split_masks(data.cell_ids, split, file=str(graph))
    tr, va, te = masks["train"] & (data.library_size > 0), masks["val"], masks["test"]  # ACTIVA needs counts
    population = resolve_population(data.labels[tr], cfg.get("population"), cfg.get("min_cells", 20),
                                    key=key, file=str(preprocessed))
    check_rare(rare_cfg, data.labels[te], population)
    n_folds = ev.get("n_folds", 5)
    if va.sum() < 2 or te.sum() < n_folds or (data.labels[te] == population).sum() < n_folds:
        raise CellgnnInputError(f"too few validation/test cells (or test cells of '{population}') to score "
                                "the generators", file=str(graph), fix="use a split with more held-out cells")
    seed = int(cfg.get("seed", 0))
    classes = data.classes
    x_tr, lib_tr, lab_tr = data.x[tr], data.library_size[tr], data.labels[tr]
    x_va, x_te, lab_te = data.x[va], data.x[te], data.labels[te]
    LOG.info("augment: %d train / %d val / %d test cells, %d genes, population '%s' (%d train cells)",
             tr.sum(), va.sum(), te.sum(), data.x.shape[1], population, (lab_tr == population).sum())

    seed_everything(seed)
    pca = PcaSpace(x_tr, ev.get("n_pcs", 50), seed)
    gan_lib = lib_tr if cfg.get("sample_counts", True) else None
    activa, gan = train_generators(x_tr, lib_tr, data.y(classes)[tr], classes, x_va, pca, activa_cfg, gan_cfg,
                                   genes=data.genes, target_sum=data.target_sum, gan_library=gan_lib,
                                   n_val=ev.get("n_val_cells", 500), seed=seed, checkpoint=checkpoint,
                                   model_path=outputs["model"], progress=progress)

    def gan_cells(n, s):
        return scgan_cells(gan.generator, n, s, gan_lib, data.target_sum)

    # ----- synthetic cells and metrics on the test cells -----
    n_te = len(x_te)
    synth = {"ACTIVA": generate(activa.model, n_te, seed=seed + 7), "scGAN": gan_cells(n_te, seed + 7)}
    rng = np.random.default_rng(seed)
    control = x_tr[rng.choice(len(x_tr), size=min(n_te, len(x_tr)), replace=False)]
    kw = dict(n_folds=n_folds, n_trees=ev.get("n_trees", 200), n_top_markers=ev.get("n_top_markers", 5), seed=seed,
              n_jobs=threads)
    results = {name: evaluate_synthetic(x_te, s, x_tr, lab_tr, pca, **kw) for name, s in synth.items()}
    results["real (train)"] = evaluate_synthetic(x_te, control, x_tr, lab_tr, pca, **kw)
    for name, trainer in (("ACTIVA", activa), ("scGAN", gan)):
        results[name]["training"] = best_val(trainer.history)

    x_te_pop, n_generate = x_te[lab_te == population], int(cfg.get("n_generate", 500))
    pop_cells = generate(activa.model, max(n_generate, len(x_te_pop)), classes, population,
                         cfg.get("generation", "posterior"), x_population=x_tr[lab_tr == population],
                         threshold=cfg.get("accept_threshold", 0.5), seed=seed + 11)
    results["ACTIVA (population)"] = evaluate_synthetic(x_te_pop, pop_cells[:len(x_te_pop)], x_tr, lab_tr, pca,
                                                        **kw)
    _write_synthetic(outputs["synthetic"], data, key, population, pop_cells[:n_generate], synth, activa, classes)

    # ----- rare population -----
    rare = rare_population_experiment(x_tr, lib_tr, lab_tr, x_te, lab_te, population, activa_cfg, rare_cfg,
                                      target_sum=data.target_sum, progress=progress, n_jobs=threads)
    write_csv(rare, outputs["rare"])
    rare_summary = summarize_rare(rare)

    # ----- figures -----
    from .figures import plot_auc, plot_embedding, plot_rare

    plot_embedding(*embed_cells(pca, x_te, synth, embedding, seed), embedding, outputs["embedding"])
    plot_auc({k: results[k] for k in ("real (train)", "ACTIVA", "scGAN")}, outputs["auc"])
    plot_rare(rare_summary, outputs["rare_plot"])

    t_act, t_gan = (results[k]["training"].get("train_seconds") for k in ("ACTIVA", "scGAN"))
    metrics = {"population_key": key, "population": population, "split": split.get("split_mode"),
               "reference": "test cells (ACTIVA (population): test cells of the population)",
               "n_genes": int(data.x.shape[1]), "seed": seed, "scgan_sample_counts": gan_lib is not None,
               "generators": results,
               "seconds_to_best_ratio_scgan_over_activa": (t_gan / t_act if t_act and t_gan else None),
               "rare_population": {"summary": rare_summary, "seeds": list(rare_cfg.seeds),
                                   "n_synthetic": rare_cfg.n_synthetic},
               "activa_history": activa.history, "gan_history": gan.history}
    write_json(metrics, outputs["metrics"])
    return metrics


def embed_cells(pca: PcaSpace, x_te: np.ndarray, synth: dict[str, np.ndarray], method: str, seed: int):
    """2-D coordinates ``[N, 2]`` of the test cells and every synthetic set, and their sources ``[N]``."""
    parts = [("real", x_te)] + list(synth.items())
    pcs = np.vstack([pca.transform(x) for _, x in parts])
    source = np.concatenate([[name] * len(x) for name, x in parts])
    if method == "pca":
        return pcs[:, :2], source
    import umap

    return umap.UMAP(n_neighbors=15, random_state=seed, n_jobs=1).fit_transform(pcs), source


def _write_synthetic(path, data, key: str, population: str, pop_cells: np.ndarray,
                     synth: dict[str, np.ndarray], activa: ActivaTrainer, classes: list[str]) -> None:
    import anndata as ad
    import pandas as pd
    import torch

    with torch.no_grad():
        dev = activa.model.target_sum.device
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
