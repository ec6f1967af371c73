"""Train stage: fit one model on one split unit with each seed; evaluate on held-out cells.

``train_model(graph, name, cfg, seed, device, edge_attr)`` returns a :class:`TrainResult`
holding the fitted model, test metrics, per-cell predictions and the training history.
Torch models train full-batch with early stopping on validation loss and restore the
best epoch. In ``inductive`` graphs the training forward pass sees only the training
subgraph; validation and test cells are never in a training batch. Reference models
(:mod:`cellgnn.models.reference`) are fitted with scikit-learn. ``run_train`` is the
rules: every seed of each model on one graph file, in one process.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .errors import CellgnnInputError
from .batching import gather_features
from .graph import dense_features, graph_fingerprint, is_sparse
from .inference import chunked_logits
from .io import load_resume
from .metrics import classification_metrics
from .models import build_model, get_spec
from .models.distill import GAT_FAMILY, LayeredSelfDistillation
from .utils import seed_everything

LOG = logging.getLogger(__name__)
OPTIMIZERS = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "adamw": torch.optim.AdamW}
OPTIM_KEYS = ("optimizer", "lr", "weight_decay")


@dataclass
class TrainResult:
    """Outcome of one training run. metrics: on the test split; proba: ``[N, C]`` for every cell."""

    model: object
    metrics: dict
    proba: np.ndarray
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    params: dict = field(default_factory=dict)
    resumed_from_epoch: int | None = None


def model_params(name: str, cfg: dict) -> dict:
    """The model's settings: ``cfg["hyperparameters"][name]`` over the schema's defaults for it."""
    from .config import schema_defaults

    get_spec(name)
    defaults = schema_defaults()["train"]["hyperparameters"].get(name, {})  # none for models registered at run time
    return {**defaults, **(cfg.get("hyperparameters", {}) or {}).get(name, {})}


def train_model(graph: dict, name: str, cfg: dict, seed: int, device: torch.device | None = None,
                edge_attr: torch.Tensor | None = None, resume: str | Path | None = None) -> TrainResult:
    """Fit model ``name`` on ``graph`` (contract dict) and evaluate it on the test cells.

    cfg: the config's ``train`` section (``max_epochs``, ``patience``, ``hyperparameters``,
    ``logreg_features``, ``checkpoint_every``). edge_attr: ``[E, F]`` aligned with
    ``graph["edge_index"]`` for models that need edge features. resume: torch models write
    a resumable checkpoint there every ``checkpoint_every`` epochs and continue from it when
    it exists (same final numbers as an uninterrupted run on CPU); the caller deletes it.
    """
    from .config import settings

    spec = get_spec(name)
    cfg = settings("train", cfg)
    params = model_params(name, cfg)
    if spec.edge_features:
        if edge_attr is None:
            raise CellgnnInputError(f"model '{name}' needs edge features", field="train.models",
                                    fix="add the edge_features stage to the run or drop this model")
        if edge_attr.shape[0] != graph["edge_index"].shape[1]:
            raise CellgnnInputError(f"edge features have {edge_attr.shape[0]} rows but the graph has "
                                    f"{graph['edge_index'].shape[1]} edges", field="edge_attr",
                                    fix="recompute the edge features from this graph")
    seed_everything(seed)
    t0 = time.perf_counter()
    if spec.kind == "sklearn":
        result = _fit_reference(graph, name, params, cfg, seed)
    else:
        result = _fit_torch(graph, name, params, cfg, seed, device or torch.device("cpu"), edge_attr, resume)
    result.seconds = time.perf_counter() - t0
    result.params = params
    return result


def _fit_reference(graph: dict, name: str, params: dict, cfg: dict, seed: int) -> TrainResult:
    from .models.reference import FITTERS, fit_logreg

    if name == "logreg":
        fitted = fit_logreg(graph, params, seed, features=cfg["logreg_features"])
    else:
        fitted = FITTERS[name](graph, params, seed)
    te = graph["test_mask"].numpy()
    return TrainResult(fitted.estimator, classification_metrics(graph["y"].numpy()[te], fitted.proba[te]),
                       fitted.proba)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _resume_key(graph: dict, name: str, params: dict, cfg: dict, seed: int, edge_dim: int) -> str:
    """Hash of everything a resumable checkpoint must share with this run (not checkpoint_every)."""
    import json

    run = {k: v for k, v in cfg.items() if k != "checkpoint_every"}
    blob = json.dumps({"model": name, "params": params, "cfg": run, "seed": seed, "edge_dim": edge_dim,
                       "graph": graph_fingerprint(graph)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fit_torch(graph: dict, name: str, params: dict, cfg: dict, seed: int, device: torch.device,
               edge_attr: torch.Tensor | None, resume: str | Path | None = None) -> TrainResult:
    from torch_geometric.utils import subgraph

    arch = {k: v for k, v in params.items() if k not in OPTIM_KEYS}
    edge_dim = 0 if edge_attr is None else edge_attr.shape[1]
    model = build_model(name, graph["x"].shape[1], len(graph["classes"]), edge_dim=edge_dim, **arch).to(device)
    distill = None  # train.self_distillation: auxiliary heads on the GAT layers, in training only
    if cfg.get("self_distillation") and name in GAT_FAMILY:
        from .config import settings

        model = distill = LayeredSelfDistillation(model, len(graph["classes"]),
                                                  **settings("train.distillation", cfg.get("distillation"))).to(device)
    opt_name = params["optimizer"]
    if opt_name not in OPTIMIZERS:
        raise CellgnnInputError(f"unknown optimizer '{opt_name}'", field=f"train.hyperparameters.{name}.optimizer",
                                fix=f"use one of {sorted(OPTIMIZERS)}")
    opt = OPTIMIZERS[opt_name](model.parameters(), lr=float(params["lr"]), weight_decay=float(params["weight_decay"]))

    if not bool(graph["val_mask"].any()):
        raise CellgnnInputError(f"{name}: no validation cells, so early stopping has nothing to watch",
                                field="val_mask", fix="rebuild the graph (the graph stage draws validation cells "
                                "from the training donors)")
    batching = cfg["batching"]
    # sparse node features (graph.sparse_features) stay sparse: densified per mini-batch (cluster
    # batching) and per inference chunk; full batching densifies the training block
    sparse = is_sparse(graph["x"])
    n = graph["x"].shape[0]
    x = graph["x"] if sparse else graph["x"].to(device)
    y = graph["y"].to(device)
    ei = graph["edge_index"].to(device)
    ea = edge_attr.to(device) if edge_attr is not None else None
    train_mask = graph["train_mask"].to(device)
    val_mask = graph["val_mask"].to(device)

    def rows(nodes: torch.Tensor):
        if sparse and batching == "cluster":
            return x[nodes.cpu().numpy()]
        return dense_features(graph, nodes.cpu()).to(device) if sparse else x[nodes]

    if graph["graph_mode"] == "inductive":  # training pass sees the training block only
        tr_nodes = train_mask.nonzero().view(-1)
        tr_ei, tr_ea = subgraph(tr_nodes, ei, ea, relabel_nodes=True, num_nodes=n)
        tr_x, tr_y, tr_mask = rows(tr_nodes), y[tr_nodes], None
        # no edges join the split blocks: the validation block alone gives the val cells' logits
        va_nodes = val_mask.nonzero().view(-1)
        va_ei, va_ea = subgraph(va_nodes, ei, ea, relabel_nodes=True, num_nodes=n)
        va_x, va_y, va_mask = (None if sparse else x[va_nodes]), y[va_nodes], None
    else:
        tr_x, tr_y, tr_ei, tr_ea, tr_mask = (rows(torch.arange(n)) if sparse else x), y, ei, ea, train_mask
        va_x, va_y, va_ei, va_ea, va_mask = x, y, ei, ea, val_mask
        va_nodes = val_mask.nonzero().view(-1)
        if sparse:  # chunked inference gives the validation cells' logits alone
            va_y, va_mask = y[va_nodes], None
    pca = graph["pca"].numpy()
    chunk = int(cfg["inference_cells"])

    def val_logits() -> torch.Tensor:
        if not sparse:
            return model(va_x, va_ei, va_ea)
        return chunked_logits(model, x, graph["edge_index"], va_nodes.cpu().numpy(), edge_attr, pca, chunk,
                              device).to(device)
    # class weights balance rare classes in the loss
    counts = torch.bincount(y[train_mask], minlength=len(graph["classes"])).float()
    weight = (counts.sum() / counts.clamp(min=1) / len(counts)) if cfg["class_weights"] else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)

    def step(xb, eib, eab, yb, mb) -> float:
        opt.zero_grad()
        out = model(xb, eib, eab)
        loss = loss_fn(out if mb is None else out[mb], yb if mb is None else yb[mb])
        if distill is not None:
            loss = loss + distill.aux_loss(out, yb, mb, loss_fn)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: training loss became {loss.item()} at epoch {epoch}; "
                                     "lower the learning rate")
        loss.backward()
        opt.step()
        return float(loss.detach())

    if batching == "cluster":  # Cluster-GCN mini-batches over the training graph (cellgnn.batching)
        from .batching import ClusterBatches, pca_partition

        sub_pca = graph["pca"] if graph["graph_mode"] != "inductive" else graph["pca"][graph["train_mask"]]
        num_parts = min(int(cfg["num_parts"]), tr_x.shape[0])
        batches = ClusterBatches(tr_ei, pca_partition(sub_pca.numpy(), num_parts),
                                 int(cfg["parts_per_batch"]), seed=seed)
        tr_train = torch.ones(tr_x.shape[0], dtype=torch.bool, device=device) if tr_mask is None else tr_mask

    best = {"loss": float("inf"), "epoch": -1, "state": None}
    history = []
    start, resumed = 0, None
    every = int(cfg["checkpoint_every"])
    key = _resume_key(graph, name, params, cfg, seed, edge_dim)
    if resume is not None:
        state = load_resume(resume, key, "training")
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            best, history = state["best"], state["history"]
            start = resumed = state["epoch"] + 1
            _set_rng_state(state["rng"])
            LOG.info("%s: resumed from %s after epoch %d", name, resume, state["epoch"])
    bar = tqdm(range(start, cfg["max_epochs"]), desc=f"train {name}", mininterval=10, leave=False,
               initial=start, total=cfg["max_epochs"])
    for epoch in bar:
        model.train()
        if batching == "cluster":
            total, seen = 0.0, 0
            batches.epoch = epoch  # parts shuffled with seed + epoch, also after a resume
            for b in batches:
                nid = b.node_ids.to(device)
                mb = tr_train[nid]
                if not bool(mb.any()):
                    continue
                eab = None if tr_ea is None else tr_ea[b.edge_ids.to(device)]
                xb = gather_features(tr_x, b.node_ids).to(device)
                total += step(xb, b.edge_index.to(device), eab, tr_y[nid], mb) * int(mb.sum())
                seen += int(mb.sum())
            train_loss = total / max(1, seen)
        else:
            train_loss = step(tr_x, tr_ei, tr_ea, tr_y, tr_mask)
        model.eval()
        with torch.no_grad():
            logits = val_logits()
            val_loss = float(loss_fn(logits if va_mask is None else logits[va_mask],
                                     va_y if va_mask is None else va_y[va_mask]))
        if not np.isfinite(val_loss):
            raise CellgnnInputError(f"{name}: the validation loss became {val_loss} at epoch {epoch}",
                                    field=f"train.hyperparameters.{name}.lr",
                                    fix="lower the learning rate, or check the data for extreme values")
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best["loss"] - 1e-6:
            best = {"loss": val_loss, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        elif epoch - best["epoch"] >= cfg["patience"]:
            break
        if epoch % 25 == 0:
            bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{val_loss:.3f}", refresh=False)
        if resume is not None and (epoch + 1) % every == 0:
            from .io import torch_save

            torch_save({"key": key, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "best": best, "history": history, "rng": _rng_state()}, resume)
    model.load_state_dict(best["state"])
    if distill is not None:
        model = distill.student()
    model.eval()
    with torch.no_grad():
        logits = (chunked_logits(model, x, graph["edge_index"], np.arange(n), edge_attr, pca, chunk, device)
                  if sparse else model(x, ei, ea))
        proba = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
    te = graph["test_mask"].numpy()
    LOG.info("%s: best epoch %d of %d, val loss %.4f", name, best["epoch"], len(history), best["loss"])
    return TrainResult(model.cpu(), classification_metrics(graph["y"].numpy()[te], proba[te]), proba,
                       history, best["epoch"], resumed_from_epoch=resumed)


def predictions_table(graph: dict, proba: np.ndarray) -> pd.DataFrame:
    """Per-cell predictions: ``cell_id, split, donor, sample, cell_type, true, pred, p_<class>...``."""
    classes = np.asarray(graph["classes"])
    split = np.where(graph["train_mask"].numpy(), "train", np.where(graph["val_mask"].numpy(), "val", "test"))
    names = {k: np.asarray(graph[f"{k}s"]) for k in ("donor", "sample", "cell_type")}
    df = pd.DataFrame({"cell_id": graph["cell_ids"], "split": split,
                       **{k: v[graph[k].numpy()] for k, v in names.items()},
                       "true": classes[graph["y"].numpy()], "pred": classes[proba.argmax(axis=1)]})
    for i, c in enumerate(classes):
        df[f"p_{c}"] = proba[:, i]
    return df


# ---------------------------------------------------------------- stage entry points
def run_train(graph_path: str, names: str | list[str], seeds: list[int], cfg: dict, device_pref: str, output,
              edge_features: str | None = None, drop_group: str | None = None, topup: str | None = None,
              compare_with: list[str] = ()) -> list[TrainResult]:
    """The train rules: fit each model of ``names`` on the graph file with every seed, in one
    process (the graph and edge features are read once), writing per model and seed
    ``output.model[i]``, ``output.metrics[i]``, ``output.predictions[i]``: lists in model-major
    order, ``i = model_index * len(seeds) + seed_index`` (the order of Snakemake's ``expand``).

    drop_group: edge-feature ablation; train without that group of edge-feature columns
    and record the runs as model ``<name>_minus_<group>``. topup: synthetic training cells of
    :func:`cellgnn.augment.graph_topup.run_topup` joined to the training graph, recorded as
    ``<name>_activa`` (evaluated on the real cells); compare_with: the plain model's
    predictions.csv per seed, whose per-class test F1 is recorded beside the topped-up model's.
    """
    from .edge_features import load_edge_features
    from .graph import load_graph
    from .utils import get_device

    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        get_spec(name)  # unknown model: fail before loading anything
    graph = load_graph(graph_path)
    check_split_classes(graph, str(graph_path))
    edge_attr = load_edge_features(edge_features, graph, drop_group)["edge_attr"].float() if edge_features else None
    synthetic = None
    if topup is not None:
        from .graph import load_topup

        synthetic = load_topup(topup, graph)
    device = get_device(device_pref)
    results = []
    for m, name in enumerate(names):
        record = (f"{name}_minus_{drop_group}" if drop_group else f"{name}_activa" if topup else name)
        runs: list[TrainResult] = []
        for i, seed in enumerate(seeds):
            k = m * len(seeds) + i
            files = SimpleNamespace(model=output.model[k], metrics=output.metrics[k],
                                    predictions=output.predictions[k])
            fitted = runs[0] if runs and get_spec(name).deterministic else None
            runs.append(_train_one(graph, name, record, int(seed), cfg, device, files, edge_attr, synthetic,
                                   compare_with[i] if compare_with else None, fitted=fitted))
        results.extend(runs)
    # kept until every model of the job is written: a rerun of an interrupted job resumes each
    # finished run from its last checkpoint instead of retraining it
    for path in output.model:
        resume_path(path).unlink(missing_ok=True)
    return results


def _train_one(graph: dict, name: str, record: str, seed: int, cfg: dict, device, files, edge_attr,
               synthetic: dict | None = None, compare_with: str | None = None,
               fitted: TrainResult | None = None) -> TrainResult:
    """One seed of :func:`run_train`: train (resuming from ``resume.pt``; a deterministic model's
    ``fitted`` result of another seed is reused), then write its three files."""
    from .io import torch_save, write_csv, write_json
    from .metrics import majority_baseline

    resume = resume_path(files.model)
    train_graph = graph
    if synthetic is not None:
        from .graph import add_synthetic_nodes

        train_graph = add_synthetic_nodes(graph, synthetic["x"], synthetic["y"], k=synthetic["k"], seed=seed)
    result = fitted or train_model(train_graph, name, cfg, seed, device, edge_attr, resume=resume)
    n = graph["x"].shape[0]
    result.proba = result.proba[:n]
    y = graph["y"].numpy()
    te = graph["test_mask"].numpy()
    metrics = {
        "model": record, "dropped_group": record[len(name) + len("_minus_"):] if "_minus_" in record else None,
        "split": graph["split_mode"], "fold": graph.get("fold", 0), "unit": graph.get("unit", graph["split_mode"]),
        "seed": seed, "test": result.metrics,
        "majority_baseline_test": majority_baseline(y[graph["train_mask"].numpy()], y[te], len(graph["classes"])),
        "n_test_cells": int(te.sum()), "best_epoch": result.best_epoch,
        "epochs_run": len(result.history), "seconds": round(result.seconds, 2), "device": str(device),
        "params": result.params, "resumed_from_epoch": result.resumed_from_epoch,
    }
    if synthetic is not None:
        metrics["n_synthetic_train"] = {c: int(v) for c, v in synthetic["n_per_class"].items()}
        metrics["per_class_f1_test"] = {record: per_class_f1(y[te], result.proba[te].argmax(1), graph["classes"])}
        if compare_with is not None:
            base = pd.read_csv(compare_with, dtype={"true": str, "pred": str})
            base = base[base["split"] == "test"]
            idx = {c: i for i, c in enumerate(graph["classes"])}
            metrics["per_class_f1_test"][name] = per_class_f1(base["true"].map(idx).to_numpy(),
                                                              base["pred"].map(idx).to_numpy(), graph["classes"])
    torch_save({**checkpoint(result, name, graph, seed, edge_attr), "record": record}, files.model)
    write_csv(predictions_table(graph, result.proba), files.predictions)
    write_json(metrics, files.metrics)
    LOG.info("%s/%s seed %d test: %s", graph.get("unit", graph["split_mode"]), record, seed, result.metrics)
    return result


def per_class_f1(y_true: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict[str, float]:
    """F1 of each class on ``y_true`` (class indices), keyed by class name."""
    from sklearn.metrics import f1_score

    f1 = f1_score(y_true, pred, labels=np.arange(len(classes)), average=None, zero_division=0)
    return {c: float(v) for c, v in zip(classes, f1)}


def check_split_classes(graph: dict, where: str) -> None:
    """Refuse a graph whose training cells lack a class, or (except in a donor_cv fold, whose test
    donors need not hold every class) whose test cells do: its metrics would silently skip it.
    Refuse a graph without validation cells: early stopping needs them."""
    y = graph["y"].numpy()
    if not bool(graph["val_mask"].any()):
        raise CellgnnInputError("the graph has no validation cells (early stopping has nothing to watch)", file=where,
                                field="val_mask", fix="rebuild the graph with this version of the graph stage (it "
                                "draws validation cells from the training donors)")
    for split in ("train",) if graph["split_mode"] == "donor_cv" else ("train", "test"):
        present = set(np.unique(y[graph[f"{split}_mask"].numpy()]).tolist())
        missing = [c for i, c in enumerate(graph["classes"]) if i not in present]
        if missing:
            raise CellgnnInputError(f"the {split} split has no cells of class(es) {missing}", file=where,
                                    field=f"{split}_mask", fix="rebuild the graph with the graph stage (it stratifies "
                                    "the split), add cells of those classes, or drop the classes")


def resume_path(model_path: str | Path) -> Path:
    """Where a training job keeps its resumable checkpoint: ``resume.pt`` next to ``model.pt``.

    Not a declared output, so Snakemake leaves it in place when the job is killed; the
    rerun continues from it, and the job deletes it once its outputs are written.
    """
    return Path(model_path).parent / "resume.pt"


def checkpoint(result: TrainResult, name: str, graph: dict, seed: int, edge_attr=None) -> dict:
    """Everything needed to reload a model and check it matches the data it is applied to."""
    model = result.model
    return {
        "model": name, "seed": seed, "params": result.params, "genes": graph["genes"],
        "classes": graph["classes"], "split_mode": graph["split_mode"], "graph_fingerprint": graph_fingerprint(graph),
        "edge_dim": 0 if edge_attr is None else int(edge_attr.shape[1]),
        "state_dict": model.state_dict() if isinstance(model, nn.Module) else None,
        "sklearn": None if isinstance(model, nn.Module) else model,
        "history": result.history, "best_epoch": result.best_epoch,
    }


def load_model(path: str, graph: dict):
    """Rebuild a trained model from its checkpoint; refuse one trained on other genes or classes."""
    try:
        ckpt = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CellgnnInputError(f"cannot read checkpoint ({e})", file=str(path), fix="retrain the model") from e
    if ckpt.get("genes") != graph["genes"]:
        raise CellgnnInputError("checkpoint was trained on different genes than this dataset's", file=str(path),
                                field="genes", fix="retrain the model on this dataset (or explain the matching run)")
    if ckpt.get("classes") != graph["classes"]:
        raise CellgnnInputError(f"checkpoint classes {ckpt.get('classes')} differ from the data's {graph['classes']}",
                                file=str(path), field="classes", fix="retrain the model on this dataset")
    if ckpt.get("graph_fingerprint", graph_fingerprint(graph)) != graph_fingerprint(graph):
        raise CellgnnInputError("checkpoint was trained on another dataset or split (same genes and classes, "
                                "different cells)", file=str(path), field="graph_fingerprint",
                                fix="retrain the model on this dataset's graph, or use the checkpoint of this run")
    if ckpt["state_dict"] is None:
        return ckpt["sklearn"], ckpt
    arch = {k: v for k, v in ckpt["params"].items() if k not in OPTIM_KEYS}
    model = build_model(ckpt["model"], len(ckpt["genes"]), len(ckpt["classes"]), edge_dim=ckpt["edge_dim"], **arch)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


