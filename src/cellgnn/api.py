"""cellgnn from Python, in scanpy's style: functions that take an AnnData, write their results into
it under documented keys, and return it. Keyword arguments default to the config schema
(``workflow/schemas/config.schema.yaml``, through :func:`cellgnn.config.settings`); unknown or
ill-typed ones are refused as in a config file. The functions run the same library code as the
workflow's rules::

    import cellgnn as cg
    adata = cg.pp.prepare(adata, label="condition", donor="donor", cell_type="cell_type")
    cg.tl.neighbors(adata)                  # obsp / uns["neighbors"] for sc.tl.umap, sc.tl.leiden
    cg.tl.build_graph(adata, split="donors")
    cg.tl.fit(adata, model="gat", seeds=[0, 1])
    cg.tl.predict(adata)                    # obs cellgnn_prediction, cellgnn_confidence, ...
    cg.tl.explain(adata, methods=["integrated_gradients", "de_control"])
    cg.get.attributions(adata, "integrated_gradients")   # genes x rankings DataFrame
    cg.write_results(adata, "cellgnn.h5ad")

Keys (README "The results file" lists the workflow's file; the API writes the same keys, plus):

- ``obs["cellgnn_split"]`` train/val/test of the split unit, ``obsp["cellgnn_graph"]`` the model's
  kNN graph (``[N, N]``; row = target cell, column = source cell, value = edge weight; block
  diagonal for ``graph_mode: inductive``), ``uns["cellgnn"]["graph"]`` its settings (build_graph);
- ``uns["cellgnn"]["fit"][model]``: ``unit``, ``seeds``, ``proba`` (``[S, N, C]`` float32, every
  cell, each seed), ``metrics`` (test metrics per seed) and ``checkpoints`` (``seed<k>`` -> the
  model checkpoint as torch.save bytes in a uint8 array; unpickled when read: open only files you
  trust) (fit).
"""

from __future__ import annotations

import io
import json
import tempfile
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .errors import CellgnnInputError
from .neighbors import neighbors
from .results import KEY, add_calls, add_explanations, add_predictions, add_tables, attributions, write_results

WHERE = "AnnData"
_UNSET = object()


def _settings(section: str, given: dict) -> dict:
    """The config ``section`` (dotted) with ``given`` over the schema's defaults, checked against the schema."""
    from .config import validate_config

    cfg: dict = {}
    node = cfg
    parts = section.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = dict(given)
    validate_config(cfg, source="keyword arguments", semantic=False)
    for p in parts:
        cfg = cfg[p]
    return cfg


def _default(key: str):
    from .config import schema_defaults

    return schema_defaults()[key]


def _meta(adata) -> dict:
    if not isinstance(adata.uns.get(KEY), dict):
        adata.uns[KEY] = {}
    return adata.uns[KEY]


# ---------------------------------------------------------------- pp
def check_counts(adata, layer: str | None = None, expect_counts: bool | None = None):
    """Refuse an AnnData whose ``X`` (or ``layers[layer]``) holds NaN or infinite values or, with
    ``expect_counts`` (default: ``preprocess.expect_counts``), is not raw counts. Returns ``adata``."""
    from .preprocess import check_matrix

    expect = _settings("preprocess", {})["expect_counts"] if expect_counts is None else expect_counts
    if layer is not None and layer not in adata.layers:
        raise CellgnnInputError(f"no layer '{layer}' (layers: {list(adata.layers)})", file=WHERE,
                                field=f"layers.{layer}", fix="name an existing layer, or None for X")
    check_matrix(adata.X if layer is None else adata.layers[layer], expect, WHERE)
    return adata


def prepare(adata, label: str | None = None, donor: str | None = None, cell_type=_UNSET, sample=_UNSET,
            seed: int | None = None, **preprocess):
    """The workflow's data and preprocess stages on an in-memory AnnData of raw counts; returns a new AnnData.

    label, donor, cell_type, sample: obs columns (defaults: ``data.keys``; ``cell_type=None`` or
    ``sample=None`` when there is none); they are renamed to ``label``, ``donor``, ``cell_type``,
    ``sample`` (categorical). preprocess: ``preprocess`` settings (``min_genes``, ``hvg``, ``n_pcs``,
    ``expect_counts``, ...). The result has ``layers["counts"]``, normalized ``X``, ``obsm["X_pca"]``
    and ``uns["cellgnn"]["qc"]`` (the QC report, JSON text).
    """
    from .data import standardize_obs
    from .preprocess import preprocess as run_preprocess

    given = {k: v for k, v in (("label", label), ("donor", donor)) if v is not None}
    given.update({k: v for k, v in (("cell_type", cell_type), ("sample", sample)) if v is not _UNSET})
    keys = _settings("data.keys", given)
    cfg = _settings("preprocess", preprocess)
    seed = _default("seed") if seed is None else seed
    out = standardize_obs(adata.copy(), keys, where=WHERE)
    out, qc = run_preprocess(out, cfg, seed=seed, source=WHERE)
    _meta(out)["qc"] = json.dumps(qc, sort_keys=True, default=str)
    return out


# ---------------------------------------------------------------- tl: graph
def _require_prepared(adata, what: str) -> None:
    for col in ("label", "donor"):
        if col not in adata.obs:
            raise CellgnnInputError(f"{what} needs obs['{col}'] (columns: {list(adata.obs.columns)})", file=WHERE,
                                    field=f"data.keys.{col}",
                                    fix=f"run cellgnn.pp.prepare(adata, {col}=<your column>) first")
        if not isinstance(adata.obs[col].dtype, pd.CategoricalDtype):
            raise CellgnnInputError(f"obs['{col}'] is not categorical", file=WHERE, field=f"obs.{col}",
                                    fix="run cellgnn.pp.prepare first (it makes the key columns categorical)")


def build_graph(adata, split: str = "cells", seed: int | None = None, n_jobs: int = 1, **graph):
    """Split the cells (train/val/test) and build the model's kNN graph, as rule graph does.

    split: ``cells``, ``donors`` or ``donor_cv/fold<i>``; seed: default ``seed``; graph: ``graph``
    settings (``k``, ``n_pcs``, ``graph_mode``, ``fractions``, ...). Writes ``obs["cellgnn_split"]``,
    ``obsp["cellgnn_graph"]`` and ``uns["cellgnn"]["graph"]``; returns ``adata``.
    """
    import scipy.sparse as sp

    from .graph import build_graph as build

    _require_prepared(adata, "build_graph")
    cfg = _settings("graph", graph)
    seed = _default("seed") if seed is None else seed
    g = build(adata, cfg, split, seed, n_jobs=n_jobs)
    n = adata.n_obs
    src, dst = g["edge_index"].numpy()
    adata.obsp[f"{KEY}_graph"] = sp.csr_matrix((g["edge_weight"].numpy(), (dst, src)), shape=(n, n))
    adata.obs[f"{KEY}_split"] = pd.Categorical(
        np.where(g["train_mask"].numpy(), "train", np.where(g["val_mask"].numpy(), "val", "test")),
        categories=["train", "val", "test"])
    _meta(adata)["graph"] = {"unit": split, "seed": int(seed), "config": json.dumps(cfg, sort_keys=True)}
    return adata


def graph_from_adata(adata) -> dict:
    """The graph dict of the contract (CONTRIBUTING.md) from the keys :func:`build_graph` wrote."""
    from .graph import assemble_graph

    meta = _meta(adata).get("graph")
    if meta is None or f"{KEY}_graph" not in adata.obsp or f"{KEY}_split" not in adata.obs:
        raise CellgnnInputError("no cellgnn graph in this AnnData", file=WHERE, field=f"obsp.{KEY}_graph",
                                fix="run cellgnn.tl.build_graph(adata, split=...) first")
    _require_prepared(adata, "the graph")
    a = adata.obsp[f"{KEY}_graph"].tocsr()
    a.sort_indices()
    dst = np.repeat(np.arange(adata.n_obs, dtype=np.int64), np.diff(a.indptr))
    edge_index = np.vstack([a.indices.astype(np.int64), dst])
    split = adata.obs[f"{KEY}_split"].astype(str).to_numpy()
    return assemble_graph(adata, split, edge_index, a.data.astype(np.float32), json.loads(meta["config"]),
                          str(meta["unit"]), int(meta["seed"]))


# ---------------------------------------------------------------- tl: models
def _checkpoint_bytes(ckpt: dict) -> np.ndarray:
    import torch

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8).copy()


def fit(adata, model: str = "gat", seeds: list[int] | None = None, device: str | None = None, **train):
    """Train ``model`` on the graph of :func:`build_graph` with each seed (default ``train.seeds``), as
    rule train does (early stopping on the validation cells; metrics on the test cells). device:
    default ``device`` (CUDA when visible). train: ``train`` settings (``max_epochs``, ``patience``,
    ``hyperparameters``, ...). Writes ``uns["cellgnn"]["fit"][model]``; returns ``adata``.
    Models that read edge features (``gat_ef``, ``gat_edge``, ``gcn_ef``) need the workflow.
    """
    from .models import get_spec
    from .train import check_split_classes, checkpoint, train_model
    from .utils import get_device

    spec = get_spec(model)
    if spec.edge_features:
        raise CellgnnInputError(f"model '{model}' reads edge features, which the Python API does not compute",
                                file=WHERE, field="train.models",
                                fix="use a model without edge features (e.g. gat), or the workflow")
    cfg = _settings("train", train)
    seeds = [int(s) for s in (cfg["seeds"] if seeds is None else seeds)]
    graph = graph_from_adata(adata)
    check_split_classes(graph, WHERE)
    dev = get_device(device or _default("device"))
    blobs, probas, rows, fitted = {}, [], [], None
    for seed in seeds:
        fitted = fitted if fitted is not None and spec.deterministic else train_model(graph, model, cfg, seed, dev)
        blobs[f"seed{seed}"] = _checkpoint_bytes(checkpoint(fitted, model, graph, seed))
        probas.append(fitted.proba.astype(np.float32))
        rows.append({"model": model, "split": graph["split_mode"], "unit": graph["unit"], "seed": seed,
                     **fitted.metrics})
    _meta(adata).setdefault("fit", {})[model] = {
        "unit": graph["unit"], "seeds": np.asarray(seeds, dtype=np.int64), "proba": np.stack(probas),
        "metrics": pd.DataFrame(rows), "checkpoints": blobs, "classes": np.asarray(graph["classes"], dtype=object)}
    return adata


def _fitted(adata) -> dict:
    fits = _meta(adata).get("fit") or {}
    if not fits:
        raise CellgnnInputError("no fitted model in this AnnData", file=WHERE, field=f"uns.{KEY}.fit",
                                fix="run cellgnn.tl.fit(adata, model=...) first")
    return fits


def predict(adata, metric: str | None = None):
    """The held-out calls of the fitted models (:func:`fit`), as rule results writes them: obs
    ``cellgnn_prediction`` / ``cellgnn_confidence`` (the best model by mean test ``metric``, default
    ``evaluation.metric``, probabilities averaged over seeds), ``cellgnn_heldout``, ``cellgnn_unit``,
    ``cellgnn_pred_<model>``, obsm ``cellgnn_proba``, and the donor- (or sample-) level calls of the
    test donors (obs ``cellgnn_<donor|sample>_call``, uns ``cellgnn.calls``). Training and validation
    cells get no call. Returns ``adata``."""
    from .heldout import call_unit_of, unit_calls
    from .train import predictions_table

    fits = _fitted(adata)
    metric = metric or _settings("evaluation", {})["metric"]
    graph = graph_from_adata(adata)
    mode = graph["split_mode"]
    tables, calls, runs = {}, [], []
    for model, f in sorted(fits.items()):
        if f["unit"] != graph["unit"]:
            raise CellgnnInputError(f"model '{model}' was fitted on split {f['unit']}, the graph is {graph['unit']}",
                                    file=WHERE, field=f"uns.{KEY}.fit.{model}", fix="fit it again on this graph")
        tables[model] = {}
        for seed, proba in zip(np.asarray(f["seeds"]).tolist(), np.asarray(f["proba"])):
            pred = predictions_table(graph, proba.astype(np.float64))
            tables[model][seed] = pred.assign(unit=graph["unit"])
            test = pred[pred["split"] == "test"]
            kind = call_unit_of(test) if mode != "cells" else None
            if kind is not None:
                calls.append(unit_calls(test, graph["classes"], kind).assign(model=model, split=mode, seed=seed))
        runs.append(pd.DataFrame(f["metrics"]))
    runs_df = pd.concat(runs, ignore_index=True)
    best = str(runs_df.groupby("model")[metric].mean().idxmax())
    add_predictions(adata, tables, best, mode)
    calls_df = pd.concat(calls, ignore_index=True) if calls else pd.DataFrame()
    add_calls(adata, calls_df, best, mode)
    _meta(adata)["metric"] = metric
    add_tables(adata, {"models": runs_df, **({"calls": calls_df} if calls else {})})
    return adata


def explain(adata, model: str | None = None, methods: list[str] | None = None, device: str | None = None,
            **explain_settings):
    """Gene attributions of a fitted model on its test cells, as rule explain computes them, scored
    against ``uns["ground_truth"]`` (simulated data) or ``gene_set``. model: default ``explain.model``
    (``auto``: the first fitted of gat, gat_ef, ..., scanna); methods: default ``explain.methods``
    (``attention`` reads a fitted ``explain.attention_model``; methods with nothing to read are
    skipped with a note in ``uns["cellgnn"]["explain"]["run"]``); explain_settings: other ``explain``
    settings (``n_cells``, ``ig``, ``top_k``, ``de_control``, ``gene_set``, ...). Writes varm
    ``cellgnn_<method>`` (and ``cellgnn_truth``) and ``uns["cellgnn"]["explain"]``; returns ``adata``."""
    from .config import EXPLAINABLE
    from .explain import ExplainInputs, write_explanations
    from .train import load_model
    from .utils import get_device

    fits = _fitted(adata)
    params = _settings("explain", {**explain_settings, **({"methods": list(methods)} if methods else {})})
    model = params["model"] if model is None else model
    if model == "auto":
        model = next((m for m in EXPLAINABLE if m in fits), None)
    if model not in fits:
        raise CellgnnInputError(f"model '{model}' is not fitted (fitted: {sorted(fits)})", file=WHERE,
                                field="explain.model", fix="fit it first, or name a fitted model")
    if model not in EXPLAINABLE:
        raise CellgnnInputError(f"model '{model}' cannot be explained (integrated gradients, weights and "
                                "GNNExplainer need a torch model)", file=WHERE, field="explain.model",
                                fix=f"fit and explain one of {list(EXPLAINABLE)}")
    graph = graph_from_adata(adata)

    def checkpoints(name: str) -> dict[int, str]:
        f = fits.get(name)
        return {} if f is None else {int(s): f"{name}/seed{s}" for s in np.asarray(f["seeds"]).tolist()}

    def load(key: str, g: dict):
        name, seed = key.split("/")
        return load_model(io.BytesIO(np.asarray(fits[name]["checkpoints"][seed]).tobytes()), g)[0]

    truth = adata.uns.get("ground_truth")
    inputs = ExplainInputs(graph=graph, graph_path=WHERE, models=checkpoints(model), load_model=load,
                           truth=None if truth is None else {k: np.asarray(v) for k, v in truth.items()},
                           attention_models=checkpoints(params["attention_model"]))
    with tempfile.TemporaryDirectory(prefix="cellgnn-explain-") as tmp:
        write_explanations([inputs], tmp, params, device=get_device(device or _default("device")))
        add_explanations(adata, tmp, params)
    return adata


pp = SimpleNamespace(check_counts=check_counts, prepare=prepare)
tl = SimpleNamespace(neighbors=neighbors, build_graph=build_graph, fit=fit, predict=predict, explain=explain)
get = SimpleNamespace(attributions=attributions)

__all__ = ["attributions", "build_graph", "check_counts", "explain", "fit", "get", "graph_from_adata", "neighbors",
           "pp", "predict", "prepare", "tl", "write_results"]
