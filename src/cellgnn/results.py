"""The results file a scanpy user opens: ``results/<dataset>/cellgnn.h5ad``.

The preprocessed AnnData plus cellgnn's calls, probabilities, kNN graph, attributions and
tables, under the keys documented in README ("The results file"). Every call comes from a
model that held the cell out: on ``donor_cv`` the fold whose test donors include the cell;
on a single split (``donors``, or ``cells`` when it is the only mode) the test cells, while
its training and validation cells are flagged (``cellgnn_heldout`` False) and get no call.

The functions here are shared by rule ``results`` (:func:`run_results`, files in) and the
Python API (:mod:`cellgnn.api`, models fitted in the session):

- :func:`add_predictions`: obs ``cellgnn_prediction`` / ``cellgnn_confidence`` / ``cellgnn_heldout`` /
  ``cellgnn_unit`` / ``cellgnn_split`` / ``cellgnn_pred_<model>``, obsm ``cellgnn_proba``;
- :func:`add_calls`: obs ``cellgnn_<donor|sample>_call`` from the donor- (or sample-) level calls;
- :func:`add_attributions`: varm ``cellgnn_<method>`` and ``cellgnn_truth``, uns ``cellgnn.explain``;
- :func:`add_tables`, :func:`add_provenance`; :func:`write_results` writes the file atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CellgnnInputError

LOG = logging.getLogger(__name__)
KEY = "cellgnn"
PROBA_PREFIX = "p_"


def _uns(adata) -> dict:
    """``adata.uns["cellgnn"]`` (created when absent; the data stage's ``source`` entry is kept)."""
    if not isinstance(adata.uns.get(KEY), dict):
        adata.uns[KEY] = {}
    return adata.uns[KEY]


# ---------------------------------------------------------------- predictions
def read_held_out(prediction_files: list[str], mode: str) -> dict[str, dict[int, pd.DataFrame]]:
    """The held-out split's predictions: model -> seed -> one row per cell (``cell_id, unit, split,
    p_<class>...``). On ``donor_cv`` the test rows of every fold, joined (each cell once, from the fold
    that held it out); on one split (``donors``, ``cells``) every row with its train/val/test role.
    Each ``predictions.csv`` is tagged with the ``metrics.json`` beside it."""
    out: dict[str, dict[int, list[pd.DataFrame]]] = {}
    for f in prediction_files:
        with open(Path(f).with_name("metrics.json")) as fh:
            m = json.load(fh)
        if m["split"] != mode:
            continue
        df = pd.read_csv(f, dtype={"cell_id": str, "split": str})
        if mode == "donor_cv":
            df = df[df["split"] == "test"]
        cols = ["cell_id", "split", *[c for c in df.columns if c.startswith(PROBA_PREFIX)]]
        out.setdefault(m["model"], {}).setdefault(int(m["seed"]), []).append(
            df[cols].assign(unit=m.get("unit", m["split"])))
    tables = {model: {seed: pd.concat(parts, ignore_index=True) for seed, parts in sorted(seeds.items())}
              for model, seeds in out.items()}
    for model, seeds in tables.items():
        for seed, df in seeds.items():
            if df["cell_id"].duplicated().any():
                raise CellgnnInputError(f"model {model} seed {seed}: a cell is held out by more than one {mode} unit "
                                        f"(e.g. {df.loc[df['cell_id'].duplicated(), 'cell_id'].iloc[0]})",
                                        file=str(Path(prediction_files[0]).parents[3]), field="predictions.csv",
                                        fix="the predictions come from different graph runs: rerun the graph and "
                                            "train rules")
    return tables


def add_predictions(adata, tables: dict[str, dict[int, pd.DataFrame]], best: str, held_out_mode: str):
    """Write the held-out calls into ``adata`` (see the module doc); returns ``adata``.

    tables: :func:`read_held_out`'s model -> seed -> ``cell_id, unit, split, p_<class>...``; every
    cell of ``adata`` must appear in the best model's tables (a cell unknown to them means the
    predictions come from another preprocessing run). Probabilities are averaged over seeds;
    cells whose ``split`` is not ``test`` get NaN.
    """
    if best not in tables:
        raise CellgnnInputError(f"the best model '{best}' has no held-out predictions (models: {sorted(tables)})",
                                field="predictions.csv", fix="rerun rule collect_metrics and the training of that model")
    first = next(iter(tables[best].values()))
    classes = [c[len(PROBA_PREFIX):] for c in first.columns if c.startswith(PROBA_PREFIX)]
    names = pd.Index(adata.obs_names.astype(str))
    ref = first.set_index("cell_id")
    missing, unknown = names.difference(ref.index), ref.index.difference(names)
    if len(missing) or len(unknown):
        example = (missing if len(missing) else unknown)[0]
        raise CellgnnInputError(f"{len(missing)} cells of the data have no prediction and {len(unknown)} predicted "
                                f"cells are not in the data (e.g. {example})", field="predictions.csv",
                                fix="the predictions come from another preprocessing run: rerun the graph and train "
                                    "rules")
    ref = ref.reindex(names)
    held = (ref["split"] == "test").to_numpy()
    obs = adata.obs
    obs[f"{KEY}_heldout"] = held
    obs[f"{KEY}_unit"] = pd.Categorical(ref["unit"].astype(str).to_numpy())
    obs[f"{KEY}_split"] = pd.Categorical(ref["split"].astype(str).to_numpy(), categories=["train", "val", "test"])
    proba = {}
    for model, seeds in sorted(tables.items()):
        stack = np.stack([df.set_index("cell_id").reindex(names)[[f"{PROBA_PREFIX}{c}" for c in classes]].to_numpy()
                          for df in seeds.values()])
        p = stack.mean(axis=0).astype(np.float32)
        p[~held] = np.nan
        proba[model] = p
        obs[f"{KEY}_pred_{model}"] = _calls(p, classes)
    best_p = proba[best]
    obs[f"{KEY}_prediction"] = _calls(best_p, classes)
    obs[f"{KEY}_confidence"] = np.where(held, np.nanmax(np.where(held[:, None], best_p, 0.0), axis=1), np.nan)
    adata.obsm[f"{KEY}_proba"] = best_p
    meta = _uns(adata)
    meta.update(classes=np.asarray(classes, dtype=object), best_model=best, held_out_split=held_out_mode,
                seeds=np.asarray(sorted(tables[best]), dtype=np.int64))
    if "cell_type" in obs:
        meta["cell_type_performance"] = cell_type_performance(obs, held)
    LOG.info("%d of %d cells held out; best model %s on %s", int(held.sum()), len(held), best, held_out_mode)
    return adata


def _calls(proba: np.ndarray, classes: list[str]) -> pd.Categorical:
    """The argmax class of each row, NaN where the row is NaN."""
    ok = ~np.isnan(proba).any(axis=1)
    codes = np.full(len(proba), -1)
    codes[ok] = np.argmax(proba[ok], axis=1)
    return pd.Categorical.from_codes(codes, categories=classes)


def cell_type_performance(obs: pd.DataFrame, held: np.ndarray) -> pd.DataFrame:
    """Per cell type, the best model's held-out calls: ``cell_type, n_cells, accuracy, balanced_accuracy``
    (balanced: mean recall over the classes present among the cell type's held-out cells)."""
    rows = []
    sub = obs.loc[held, ["cell_type", "label", f"{KEY}_prediction"]].astype(str)
    for ct, g in sub.groupby("cell_type", sort=True):
        right = g["label"] == g[f"{KEY}_prediction"]
        rows.append({"cell_type": ct, "n_cells": len(g), "accuracy": float(right.mean()),
                     "balanced_accuracy": float(right.groupby(g["label"]).mean().mean())})
    return pd.DataFrame(rows, columns=["cell_type", "n_cells", "accuracy", "balanced_accuracy"])


def best_model(summary: pd.DataFrame, margins: pd.DataFrame, held_out_mode: str, metric: str) -> str:
    """``margins.csv``'s best model on held-out donors, else the highest mean ``metric`` on the held-out split."""
    if not margins.empty:
        return str(margins["best"].iloc[0])
    sub = summary[summary["split"] == held_out_mode]
    if sub.empty:
        raise CellgnnInputError(f"no model results on split '{held_out_mode}'", field="models_summary.csv",
                                fix="rerun rule collect_metrics")
    return str(sub.set_index("model")[f"{metric}_mean"].idxmax())


# ---------------------------------------------------------------- donor / sample calls
def add_calls(adata, calls: pd.DataFrame, best: str, held_out_mode: str):
    """obs ``cellgnn_<kind>_call``: the best model's call for the cell's donor (or sample: ``kind`` =
    ``calls.csv``'s ``unit_kind``), the class of highest mean log-probability averaged over seeds; NaN
    for cells of units that were not held out. Without calls (cell-level labels) nothing is added and
    ``uns["cellgnn"]["call_unit"]`` is ``none``. Returns ``adata``."""
    meta = _uns(adata)
    sub = calls[(calls["model"] == best) & (calls["split"] == held_out_mode)] if not calls.empty else calls
    if sub.empty:
        meta["call_unit"] = "none"
        return adata
    kind = str(sub["unit_kind"].iloc[0])
    classes = list(meta["classes"])
    logp = sub.groupby(sub["unit"].astype(str))[[f"mean_logp_{c}" for c in classes]].mean()
    call = pd.Series(np.asarray(classes)[logp.to_numpy().argmax(axis=1)], index=logp.index)
    values = adata.obs[kind].astype(str).map(call)
    adata.obs[f"{KEY}_{kind}_call"] = pd.Categorical(values, categories=classes)
    meta["call_unit"] = kind
    return adata


# ---------------------------------------------------------------- attributions
ATTR_SEP = " | "


def attribution_column(cls: str, cell_type: str) -> str:
    """varm column of a ranking: the class, or ``<class> | <cell type>`` for one cell type (``all`` = every class)."""
    return cls if cell_type == "all" else f"{cls}{ATTR_SEP}{cell_type}"


def add_attributions(adata, genes: pd.DataFrame, truth: tuple[dict, dict, str | None] | None = None):
    """varm ``cellgnn_<method>`` (float32 ``[G, R]``: the method's score of each gene in each of its
    rankings, per class and class x cell type, from ``explain/genes.csv``; NaN outside a ranking's top
    ``explain.top_k`` genes) with the rankings' names in ``uns["cellgnn"]["explain"]["rankings"][method]``
    and, with ``truth`` (:func:`cellgnn.explain.stage.truth_sets`), varm ``cellgnn_truth`` (bool
    ``[G, R']``, True for a planted or gene-set gene) named by ``uns["cellgnn"]["explain"]["truth_columns"]``.
    Names are ``<class>`` or ``<class> | <cell type>`` (:func:`attribution_column`); they live in
    ``uns``, not as column names, since class and cell-type names may hold characters (``/``) that
    HDF5 keys cannot. :func:`attributions` gives them back as a DataFrame. Returns ``adata``."""
    var = pd.Index(adata.var_names.astype(str))
    unknown = sorted(set(genes["gene"].astype(str)) - set(var))
    if unknown:
        raise CellgnnInputError(f"{len(unknown)} ranked genes are not genes of the data (e.g. {unknown[0]})",
                                field="explain/genes.csv", fix="the explanations come from another preprocessing "
                                                               "run: rerun rule explain")
    explain = _uns(adata).setdefault("explain", {})
    explain["rankings"] = {}
    for method, g in genes.groupby("method", sort=True):
        col = [attribution_column(str(c), str(t)) for c, t in zip(g["class"], g["cell_type"])]
        wide = pd.DataFrame({"gene": g["gene"].astype(str).to_numpy(), "column": col,
                             "score": g["score"].astype(float).to_numpy()}).pivot(index="gene", columns="column",
                                                                                  values="score")
        wide = wide.reindex(index=var, columns=sorted(wide.columns, key=_column_order))
        adata.varm[f"{KEY}_{method}"] = wide.to_numpy(np.float32)
        explain["rankings"][str(method)] = np.asarray([str(c) for c in wide.columns], dtype=object)
    if truth is not None and truth[2] is not None:
        by_class, by_ct, _ = truth
        sets = {**by_class, **{attribution_column(c, t): s for (c, t), s in by_ct.items()}}
        names = sorted(sets, key=_column_order)
        adata.varm[f"{KEY}_truth"] = np.stack([var.isin(sorted(sets[n])) for n in names], axis=1)
        explain["truth_columns"] = np.asarray(names, dtype=object)
    return adata


def attributions(adata, method: str = "integrated_gradients") -> pd.DataFrame:
    """varm ``cellgnn_<method>`` (or ``truth``) as a genes x rankings DataFrame, its columns named."""
    explain = _uns(adata).get("explain") or {}
    names = explain.get("truth_columns") if method == "truth" else (explain.get("rankings") or {}).get(method)
    if names is None or f"{KEY}_{method}" not in adata.varm:
        raise CellgnnInputError(f"no attributions of method '{method}' (have: {sorted(explain.get('rankings') or {})})",
                                file="AnnData", field=f"varm.{KEY}_{method}",
                                fix="run cellgnn.tl.explain with that method, or name one the file has")
    return pd.DataFrame(np.asarray(adata.varm[f"{KEY}_{method}"]), index=adata.var_names,
                        columns=[str(n) for n in names])


def _column_order(column: str) -> tuple:
    """Whole classes first, then class x cell type, each alphabetically."""
    return (ATTR_SEP in column, column)


EXPLAIN_TABLES = {"genes": "genes.csv", "scores": "ground_truth_scores.csv",
                  "scores_by_cell_type": "ground_truth_scores_by_cell_type.csv", "scores_summary": "scores_summary.csv",
                  "cell_types": "cell_types.csv"}


def add_explanations(adata, explain_dir: str | Path, params: dict):
    """The explain stage's tables in ``explain_dir`` (:func:`cellgnn.explain.write_explanations`) into
    ``adata``: :func:`add_attributions` with the truth the stage scored against (planted genes in
    ``uns["ground_truth"]``, or ``params["gene_set"]``), and ``uns["cellgnn"]["explain"]``: every
    table (``genes``, ``scores``, ``scores_by_cell_type``, ``scores_summary``, ``cell_types``),
    ``truth`` (what the scores are against) and ``run`` (``run.json`` as text). params: the
    ``explain`` section. Returns ``adata``."""
    from .explain.stage import truth_sets

    d = Path(explain_dir)
    tables = {k: read_table(d / f) for k, f in EXPLAIN_TABLES.items()}
    with open(d / "run.json") as fh:
        run = json.load(fh)
    gt = adata.uns.get("ground_truth")
    truth = truth_sets(None if gt is None else {k: np.asarray(v) for k, v in gt.items()}, params,
                       [str(c) for c in adata.obs["label"].cat.categories], [str(g) for g in adata.var_names],
                       list(run["classes"]))
    add_attributions(adata, tables["genes"], truth)
    add_tables(adata, tables, under="explain")
    _uns(adata)["explain"].update(truth=str(truth[2] or "none"), run=json.dumps(run, sort_keys=True))
    return adata


# ---------------------------------------------------------------- tables and provenance
def read_table(path: str | Path) -> pd.DataFrame:
    """A stage's CSV table (names as strings); an empty file (e.g. no scores without a truth) is an empty table."""
    try:
        return pd.read_csv(path, dtype={"class": str, "cell_type": str, "gene": str, "unit": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def h5ad_table(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` that ``.h5ad`` can store: a plain index, object columns as strings ('' for missing)."""
    out = df.reset_index(drop=True).copy()
    for col in out.columns:
        if out[col].dtype == object or isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    out.columns = [str(c) for c in out.columns]
    return out


def add_tables(adata, tables: dict[str, pd.DataFrame], under: str | None = None):
    """``uns["cellgnn"][name]`` (or ``uns["cellgnn"][under][name]``) = each table; returns ``adata``."""
    meta = _uns(adata)
    if under is not None:
        meta = meta.setdefault(under, {})
    for name, df in tables.items():
        meta[name] = h5ad_table(df)
    return adata


def add_provenance(adata, config_yaml: str, record: dict):
    """``uns["cellgnn"]["provenance"]``: the resolved config (YAML text), the git commit, package
    versions and the whole provenance record (JSON text). Returns ``adata``."""
    git = record.get("git", {}) or {}
    _uns(adata)["provenance"] = {
        "config": config_yaml, "git_commit": str(git.get("commit", "unknown")), "git_dirty": str(git.get("dirty")),
        "packages": {str(k): str(v) for k, v in (record.get("packages") or {}).items()},
        "record": json.dumps(record, sort_keys=True),
    }
    return adata


def write_results(adata, path: str | Path) -> Path:
    """Write ``adata`` to ``path`` (``.h5ad``, gzip) atomically: a file already there, from an older
    run with other classes or genes, is replaced whole, and a failed write leaves it untouched."""
    import time

    from .io import write_h5ad

    path = Path(path)
    t0 = time.perf_counter()
    write_h5ad(adata, path)
    LOG.info("wrote %s (%d cells x %d genes): %.1f MB in %.1f s", path, adata.n_obs, adata.n_vars,
             path.stat().st_size / 1e6, time.perf_counter() - t0)
    return path


# ---------------------------------------------------------------- the rule
def run_results(inputs: dict, out: str, held_out_mode: str, metric: str, graph: dict, seed: int,
                explain: dict | None = None, n_jobs: int = 1) -> None:
    """Rule results: ``cellgnn.h5ad`` from the preprocessed AnnData, the figures' UMAP, the held-out
    predictions and metrics tables, the explain tables (when ``inputs`` has ``genes``) and the
    provenance. inputs: paths keyed ``adata``, ``embedding``, ``predictions`` (list), ``models``,
    ``summary``, ``folds``, ``calls``, ``margins``, ``response`` (``metrics/cell_types.csv``), ``config``,
    ``provenance`` and, with explanations, ``genes``, ``scores``, ``scores_by_cell_type``,
    ``scores_summary``, ``cell_types`` (``explain/``), ``explain_run``.
    graph, seed: the config's ``graph`` section and ``seed`` (the kNN graph of :mod:`cellgnn.neighbors`,
    as rule umap_embedding built it); explain: the ``explain`` section (gene-set truth)."""
    from .io import read_h5ad
    from .neighbors import neighbors

    adata = read_h5ad(inputs["adata"], "rule preprocess")
    emb = pd.read_csv(inputs["embedding"], index_col="cell_id")
    missing = adata.obs_names.difference(emb.index.astype(str))
    if len(missing):
        raise CellgnnInputError(f"{len(missing)} cells have no UMAP coordinates (e.g. {missing[0]})",
                                file=inputs["embedding"], field="cell_id", fix="rerun rule umap_embedding")
    adata.obsm["X_umap"] = emb.reindex(adata.obs_names)[["umap1", "umap2"]].to_numpy(np.float32)
    neighbors(adata, k=graph["k"], n_pcs=graph["n_pcs"], metric=graph["metric"], method=graph["knn_method"],
              seed=seed, n_jobs=n_jobs, ann_threshold=graph.get("ann_threshold"))

    read = {k: read_table(inputs[k]) for k in ("models", "summary", "folds", "calls", "margins", "response")}
    best = best_model(read["summary"], read["margins"], held_out_mode, metric)
    add_predictions(adata, read_held_out(list(inputs["predictions"]), held_out_mode), best, held_out_mode)
    add_calls(adata, read["calls"], best, held_out_mode)
    meta = _uns(adata)
    meta["metric"] = metric
    add_tables(adata, {"models": read["models"], "models_summary": read["summary"], "folds": read["folds"],
                       "calls": read["calls"], "margins": read["margins"], "cell_type_response": read["response"]})
    if "genes" in inputs:
        add_explanations(adata, Path(inputs["genes"]).parent, explain or {})
    with open(inputs["config"]) as fh:
        config_yaml = fh.read()
    with open(inputs["provenance"]) as fh:
        add_provenance(adata, config_yaml, json.load(fh))
    write_results(adata, out)

