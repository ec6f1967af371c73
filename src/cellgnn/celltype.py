"""Cell-type stage (N-ACT-style, unsupervised): clusters, an attention classifier over them,
salient genes per cluster and a cell-type column.

``run_celltype(adata, cfg)`` on a preprocessed AnnData (``obsm["X_pca"]``, ``X``
normalized):

1. embedding: the first ``n_pcs`` PCs, Harmony-corrected over the obs columns in
   ``integrate`` (by default the label and the donor, so that a cell type is one cluster
   across conditions and donors rather than one per sample);
2. Leiden clusters (``leidenalg``, RB-configuration, ``resolution``) on the symmetric
   kNN graph of that embedding (:func:`cellgnn.graph.knn_graph`, ``n_neighbors``);
   clusters under ``min_cluster_size`` cells join the cluster with the nearest centroid;
   cluster 0 is the largest;
3. the scANNA-style attention classifier (:class:`cellgnn.models.scanna.ScANNA`) learns to
   predict the clusters from the ``max_genes`` most variable genes plus the marker table's
   genes found in the data (min–max scaled on its training cells; ``val_fraction`` of the
   cells held out for the reported accuracy);
4. salient genes of each cluster: its cells' mean attention minus the other cells'
   (:func:`cellgnn.models.scanna.salient_genes` with ``reference="rest"``);
5. names: with a marker table (TSV ``cell_type, gene``; a marker matches a gene of that name
   or of that symbol made unique with an Ensembl suffix, ``HLA-DRA-ENSG…``), a type's score
   in a cluster is the mean over its markers of ``1 - rank / name_top_k`` (0 beyond the top
   ``name_top_k``), weighted by its ratio to the type's best score over all clusters (a type
   is named where its markers are most specific: CST3, salient in monocytes and dendritic
   cells alike, does not make a monocyte cluster dendritic); each cluster takes the
   highest-scoring type, and clusters given the same name form one cell type. A cluster with
   no marker of any type in its top ``name_top_k`` stays ``cluster_<k>``.

Outputs (``celltype_stage``): ``assignments.csv`` (``cell_id, cluster, cellgnn_cell_type,
confidence``; confidence = the classifier's probability of the cell's cluster),
``salient_genes.csv`` (``cluster, cell_type, gene, score, rank``; the top ``top_k`` genes per
cluster, rank 1 = most salient) and ``metrics.json`` (cluster sizes, the classifier's
held-out accuracy, ARI / NMI of the clusters and of the named cell types against
``obs["cell_type"]`` when the data has it, marker hits). :func:`apply_cell_types` writes the calls into ``obs``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .errors import CellgnnInputError

LOG = logging.getLogger(__name__)

OBS_CELL_TYPE = "cellgnn_cell_type"
OBS_CLUSTER = "cellgnn_cluster"
OBS_CONFIDENCE = "cellgnn_cell_type_confidence"
ASSIGNMENT_COLUMNS = ["cell_id", "cluster", OBS_CELL_TYPE, "confidence"]
SALIENT_COLUMNS = ["cluster", "cell_type", "gene", "score", "rank"]
@dataclass
class CelltypeResult:
    """``assignments`` / ``salient``: the tables of the contract; ``metrics``: metrics.json;
    ``model``: the trained attention classifier; ``genes``: its input genes."""

    assignments: pd.DataFrame
    salient: pd.DataFrame
    metrics: dict
    model: torch.nn.Module
    genes: list[str]


def resolve_params(cfg: dict | None) -> dict:
    """The ``celltype`` config section over the schema's defaults; unknown keys are an error."""
    from .config import settings

    params = settings("celltype", cfg)
    unknown = sorted(set(params) - set(settings("celltype")))
    if unknown:
        raise CellgnnInputError(f"unknown celltype key(s) {unknown}", field="celltype",
                                fix=f"use keys among {sorted(settings('celltype'))}")
    params.pop("enabled")  # read by the start-up plan, not here
    return params


# ----------------------------------------------------------------------------- inputs

def read_markers(path: str | Path) -> pd.DataFrame:
    """Marker table: TSV with columns ``cell_type, gene`` (one row per marker), validated."""
    where = str(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, comment="#")
    except FileNotFoundError:
        raise CellgnnInputError("marker table not found", file=where, field="celltype.markers",
                                fix="give the path of a TSV with columns cell_type, gene (or null)") from None
    except Exception as e:  # noqa: BLE001 - any parse failure is a malformed table
        raise CellgnnInputError(f"cannot read the marker table ({e})", file=where, field="celltype.markers",
                                fix="write a tab-separated file with a header line 'cell_type<TAB>gene'") from e
    missing = {"cell_type", "gene"} - set(df.columns)
    if missing:
        raise CellgnnInputError(f"marker table lacks column(s) {sorted(missing)} (has {list(df.columns)})", file=where,
                                field="celltype.markers", fix="use a header line 'cell_type<TAB>gene'")
    df = df[["cell_type", "gene"]].dropna()
    df = df[(df["cell_type"].str.strip() != "") & (df["gene"].str.strip() != "")]
    if df.empty:
        raise CellgnnInputError("marker table has no rows", file=where, field="celltype.markers",
                                fix="add one row per marker gene: cell_type<TAB>gene")
    return df.assign(cell_type=df["cell_type"].str.strip(), gene=df["gene"].str.strip()).drop_duplicates()


def check_input(adata: ad.AnnData, p: dict, where: str = "preprocessed.h5ad") -> list[str]:
    """Refuse data the stage cannot type, before any heavy work; return the obs columns to integrate over."""
    if "X_pca" not in adata.obsm:
        raise CellgnnInputError("no obsm['X_pca']", file=where, field="obsm.X_pca", fix="run the preprocess stage first")
    if adata.n_obs < int(p["min_cells"]):
        raise CellgnnInputError(f"{adata.n_obs} cells, too few to find cell types (celltype.min_cells = "
                                f"{p['min_cells']})", file=where, field="celltype.min_cells",
                                fix="give more cells, lower celltype.min_cells, or set celltype.enabled: false")
    if adata.n_vars < 2:
        raise CellgnnInputError(f"{adata.n_vars} gene(s)", file=where, field="var_names", fix="keep more genes in QC")
    missing = [k for k in p["integrate"] if k not in adata.obs]
    if missing:
        raise CellgnnInputError(f"obs has no column(s) {missing} to integrate over", file=where,
                                field="celltype.integrate", fix=f"name obs columns among {list(adata.obs.columns)}")
    return [k for k in p["integrate"] if adata.obs[k].nunique() > 1]


# ----------------------------------------------------------------------------- clusters

def embedding(adata: ad.AnnData, n_pcs: int, integrate: list[str], seed: int) -> np.ndarray:
    """``[N, n_pcs]`` PCA coordinates, Harmony-corrected over the obs columns ``integrate`` (none: as is)."""
    pcs = np.asarray(adata.obsm["X_pca"][:, :n_pcs], dtype=np.float64)
    if not integrate:
        return pcs.astype(np.float32)
    import harmonypy

    LOG.info("Harmony over %s on %d PCs", integrate, pcs.shape[1])
    meta = adata.obs[integrate].astype(str).reset_index(drop=True)
    z = np.asarray(harmonypy.run_harmony(pcs, meta, integrate, random_state=seed, verbose=False,
                                         ncores=torch.get_num_threads()).Z_corr)  # the rule's threads
    return np.ascontiguousarray(z if z.shape[0] == adata.n_obs else z.T, dtype=np.float32)


def leiden_clusters(emb: np.ndarray, n_neighbors: int, resolution: float, seed: int,
                    min_cluster_size: int = 1) -> np.ndarray:
    """Leiden clusters ``[N]`` (int, 0 = largest) on the kNN graph of ``emb [N, D]``.

    Clusters smaller than ``min_cluster_size`` are merged into the cluster whose centroid is
    nearest to theirs. Deterministic for a given seed.
    """
    import igraph as ig
    import leidenalg

    from .graph import knn_graph

    k = min(int(n_neighbors), emb.shape[0] - 1)
    ei, w = knn_graph(emb, k, self_loops=False, seed=seed)
    keep = ei[0] < ei[1]  # each undirected edge once
    g = ig.Graph(n=emb.shape[0], edges=ei[:, keep].T.tolist(), directed=False)
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights=w[keep].astype(float).tolist(),
                                    resolution_parameter=float(resolution), seed=int(seed), n_iterations=-1)
    labels = np.asarray(part.membership, dtype=np.int64)
    while True:
        sizes = np.bincount(labels)
        small = [c for c in np.flatnonzero(sizes) if sizes[c] < min_cluster_size]
        big = [c for c in np.flatnonzero(sizes) if sizes[c] >= min_cluster_size]
        if not small or not big:
            break
        c = min(small, key=lambda s: sizes[s])
        centroids = np.stack([emb[labels == b].mean(0) for b in big])
        labels[labels == c] = big[int(np.argmin(((centroids - emb[labels == c].mean(0)) ** 2).sum(1)))]
    # renumber by size, ties by first cell
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = uniq[np.lexsort((first, -counts))]
    remap = np.empty(labels.max() + 1, dtype=np.int64)
    remap[order] = np.arange(order.size)
    return remap[labels]


# ----------------------------------------------------------------------------- classifier

def gene_symbol(name: str) -> str:
    """``HLA-DRA-ENSG00000204287`` -> ``HLA-DRA``: the symbol of a var name made unique with its Ensembl id."""
    head, sep, tail = name.rpartition("-ENSG")
    return head if sep and tail.isdigit() else name


def marker_var_index(var_names, markers: pd.DataFrame) -> dict[str, int]:
    """Marker gene -> index in ``var_names`` (exact name first, else the symbol of a suffixed name)."""
    names = [str(v) for v in var_names]
    exact = {v: i for i, v in enumerate(names)}
    by_symbol: dict[str, int] = {}
    for i, v in enumerate(names):
        by_symbol.setdefault(gene_symbol(v), i)
    return {g: exact.get(g, by_symbol.get(g)) for g in markers["gene"].unique()
            if g in exact or g in by_symbol}


def select_genes(adata: ad.AnnData, max_genes: int | None, include: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``max_genes`` genes with the largest variance of ``X`` (all when fewer), plus
    the indices ``include`` (the marker genes), in var order."""
    if not max_genes or adata.n_vars <= max_genes:
        return np.arange(adata.n_vars)
    extra = np.asarray(include if include is not None else [], dtype=np.int64)
    X = adata.X
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0)).ravel()
        var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean ** 2
    else:
        var = np.asarray(X).var(axis=0)
    return np.union1d(np.argsort(-var, kind="stable")[:max_genes], extra)


def scaled_features(adata: ad.AnnData, genes: np.ndarray, fit: np.ndarray) -> torch.Tensor:
    """``X[:, genes]`` min–max scaled to [0, 1] with the ranges of the ``fit`` cells, ``[N, G]`` float32."""
    X = adata.X[:, genes]
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = X.astype(np.float32)
    lo, hi = X[fit].min(axis=0), X[fit].max(axis=0)
    x = np.clip((X - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0) * (hi > lo)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def split_cells(y: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean ``[N]`` validation mask: ``val_fraction`` of each cluster (at least one cell of clusters with > 1)."""
    rng = np.random.default_rng(seed)
    val = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = int(round(val_fraction * idx.size)) if idx.size > 1 else 0
        val[idx[:max(n, 1 if idx.size > 1 and val_fraction > 0 else 0)]] = True
    return val


def train_classifier(x: torch.Tensor, y: np.ndarray, val: np.ndarray, p: dict, seed: int,
                     device: torch.device) -> tuple[torch.nn.Module, list[dict]]:
    """Mini-batch Adam for ``p["epochs"]`` epochs on the training cells (``~val``), class-balanced
    cross-entropy. The attention needs the full schedule: the validation loss bottoms out
    within a few epochs, long before the attention of small clusters has moved from uniform
    (``bench/README.md``), so there is no early stopping; the validation cells only report.
    Returns the model (CPU, eval mode) and the per-epoch history (train loss, val loss, val accuracy).
    """
    from tqdm import tqdm

    from .models.scanna import ScANNA
    from .utils import seed_everything

    seed_everything(seed)
    n_classes = int(y.max()) + 1
    model = ScANNA(x.shape[1], n_classes, dropout=float(p["dropout"])).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
    yt = torch.from_numpy(y).long()
    tr, va = np.flatnonzero(~val), np.flatnonzero(val)
    counts = torch.bincount(yt[tr], minlength=n_classes).float()
    loss_fn = torch.nn.CrossEntropyLoss(weight=(counts.sum() / counts.clamp(min=1) / n_classes).to(device))
    gen = torch.Generator().manual_seed(seed)
    bs = int(p["batch_size"])
    history = []
    for epoch in tqdm(range(int(p["epochs"])), desc="celltype classifier", mininterval=10, leave=False):
        model.train()
        order = torch.from_numpy(tr)[torch.randperm(tr.size, generator=gen)]
        total = 0.0
        for start in range(0, order.numel(), bs):
            b = order[start:start + bs]
            opt.zero_grad()
            loss = loss_fn(model(x[b].to(device)), yt[b].to(device))
            loss.backward()
            opt.step()
            total += float(loss.detach()) * b.numel()
        row = {"epoch": epoch, "train_loss": total / tr.size}
        if va.size:
            model.eval()
            with torch.no_grad():
                logits = model(x[va].to(device))
            row["val_loss"] = float(loss_fn(logits, yt[va].to(device)))
            row["val_accuracy"] = float((logits.argmax(1).cpu() == yt[va]).float().mean())
        history.append(row)
    return model.cpu().eval(), history


# ----------------------------------------------------------------------------- names and scores

def salience_table(salience: np.ndarray, genes: list[str], names: list[str], top_k: int) -> pd.DataFrame:
    """``salient_genes.csv``: the ``top_k`` genes of each cluster by salience ``[K, G]``."""
    rows = []
    for k in range(salience.shape[0]):
        order = np.argsort(-salience[k], kind="stable")[:top_k]
        rows += [{"cluster": k, "cell_type": names[k], "gene": genes[g], "score": float(salience[k, g]), "rank": r + 1}
                 for r, g in enumerate(order)]
    return pd.DataFrame(rows, columns=SALIENT_COLUMNS)


def name_clusters(salience: np.ndarray, genes: list[str], markers: pd.DataFrame | None,
                  name_top_k: int) -> tuple[list[str], dict]:
    """A name per cluster from a marker table (see module doc) and each cluster's scores.

    salience: ``[K, G]``. Returns ``(names, scores)`` with ``scores[k] = {cell_type: score}``:
    the type's mean marker weight in cluster k (1 = every marker is the cluster's most salient
    gene, 0 = none in its top ``name_top_k``) times its ratio to the type's best cluster.
    """
    k_clusters, n_genes = salience.shape
    default = [f"cluster_{k}" for k in range(k_clusters)]
    if markers is None:
        return default, {}
    index = marker_var_index(genes, markers)
    by_type = {t: [index[g] for g in grp["gene"] if g in index] for t, grp in markers.groupby("cell_type", sort=True)}
    absent = sorted(set(markers["gene"]) - set(index))
    if absent:
        LOG.warning("marker gene(s) not among the classifier's genes (not in the data): %s", absent)
    by_type = {t: ix for t, ix in by_type.items() if ix}
    if not by_type:
        LOG.warning("no marker gene of the marker table is among the classifier's genes; clusters stay unnamed")
        return default, {}
    rank = np.empty(salience.shape)
    rank[np.arange(k_clusters)[:, None], np.argsort(-salience, axis=1, kind="stable")] = np.arange(n_genes)
    weight = np.clip(1.0 - rank / name_top_k, 0.0, None)  # [K, G]: 1 for a cluster's top gene, 0 beyond name_top_k
    types = list(by_type)
    mean_weight = np.stack([weight[:, by_type[t]].mean(axis=1) for t in types], axis=1)  # [K, T]
    best = mean_weight.max(axis=0, keepdims=True)
    score = mean_weight * np.divide(mean_weight, best, out=np.zeros_like(mean_weight), where=best > 0)
    names = [types[int(score[k].argmax())] if score[k].max() > 0 else default[k] for k in range(k_clusters)]
    return names, {k: {t: float(score[k, j]) for j, t in enumerate(types)} for k in range(k_clusters)}


def marker_hits(salient: pd.DataFrame, markers: pd.DataFrame, cluster_type: dict[int, str], top_k: int) -> dict:
    """Whether each cluster's top ``top_k`` salient genes include a marker of the type it is matched to.

    cluster_type: cluster → cell type (the name it was given, or the majority known type).
    Returns ``by_cluster`` {cluster: {cell_type, markers, hits}} and ``by_type`` {type: any
    cluster of that type hit}; types absent from the marker table are left out.
    """
    table = {t: set(g["gene"]) for t, g in markers.groupby("cell_type")}
    top = salient[salient["rank"] <= top_k].groupby("cluster")["gene"].apply(
        lambda g: [gene_symbol(str(x)) for x in g]).to_dict()
    by_cluster, by_type = {}, {}
    for k, t in cluster_type.items():
        if t not in table:
            continue
        hits = [g for g in top.get(k, []) if g in table[t]]
        by_cluster[int(k)] = {"cell_type": t, "markers": sorted(table[t]), "hits": hits}
        by_type[t] = by_type.get(t, False) or bool(hits)
    return {"top_k": top_k, "by_cluster": by_cluster, "by_type": by_type,
            "n_types_hit": int(sum(by_type.values())), "n_types": len(by_type)}


def known_type_scores(clusters: np.ndarray, known: pd.Series) -> dict:
    """ARI, NMI and each cluster's majority known type and purity."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    known = known.astype(str).to_numpy()
    tab = pd.crosstab(clusters, known)
    per = {int(k): {"majority": str(row.idxmax()), "purity": float(row.max() / row.sum()), "n_cells": int(row.sum())}
           for k, row in tab.iterrows()}
    return {"ari": float(adjusted_rand_score(known, clusters)), "nmi": float(normalized_mutual_info_score(known, clusters)),
            "n_known_types": int(tab.shape[1]), "clusters": per}


def named_type_scores(named: np.ndarray, known: pd.Series) -> dict:
    """The named cell types (clusters of one name merged) against known types: ARI, NMI, the
    fraction of cells whose name is their known type, overall and per known type."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    known = known.astype(str).to_numpy()
    right = named == known
    return {"ari": float(adjusted_rand_score(known, named)), "nmi": float(normalized_mutual_info_score(known, named)),
            "n_names": int(np.unique(named).size), "accuracy": float(right.mean()),
            "accuracy_by_type": {t: float(right[known == t].mean()) for t in sorted(np.unique(known))}}


# ----------------------------------------------------------------------------- the stage

def run_celltype(adata: ad.AnnData, cfg: dict | None = None, device: torch.device | str = "cpu",
                 markers: pd.DataFrame | None = None, where: str = "preprocessed.h5ad") -> CelltypeResult:
    """Cluster, classify, read out salient genes and name the clusters of ``adata`` (see module doc).

    cfg: the config's ``celltype`` section (defaults from the schema); markers: a table
    from :func:`read_markers` (else read from ``cfg["markers"]`` when set).
    """
    from .models.scanna import salient_genes
    from .utils import seed_everything

    p = resolve_params(cfg)
    if markers is None and p["markers"]:
        markers = read_markers(p["markers"])
    integrate = check_input(adata, p, where)
    seed = int(p["seed"])
    seed_everything(seed)
    n_pcs = min(int(p["n_pcs"]), adata.obsm["X_pca"].shape[1])
    emb = embedding(adata, n_pcs, integrate, seed)
    clusters = leiden_clusters(emb, int(p["n_neighbors"]), float(p["resolution"]), seed, int(p["min_cluster_size"]))
    n_clusters = int(clusters.max()) + 1
    LOG.info("Leiden (resolution %s, %d neighbours, %d PCs): %d clusters", p["resolution"], p["n_neighbors"], n_pcs,
             n_clusters)
    if n_clusters < 2:
        raise CellgnnInputError(f"Leiden found a single cluster in {adata.n_obs} cells", file=where,
                                field="celltype.resolution", fix="raise celltype.resolution (or lower min_cluster_size)")
    gene_idx = select_genes(adata, p["max_genes"],
                            np.fromiter(marker_var_index(adata.var_names, markers).values(), dtype=np.int64)
                            if markers is not None else None)
    genes = [str(g) for g in adata.var_names[gene_idx]]
    val = split_cells(clusters, float(p["val_fraction"]), seed)
    x = scaled_features(adata, gene_idx, ~val)
    device = torch.device(device) if isinstance(device, str) else device
    model, hist = train_classifier(x, clusters, val, p, seed, device)
    with torch.no_grad():
        proba = torch.cat([torch.softmax(model(x[s:s + 4096]), 1) for s in range(0, x.shape[0], 4096)]).numpy()
    pred = proba.argmax(1)
    salience = salient_genes(model, x, torch.from_numpy(clusters), reference="rest").numpy()
    names, name_scores = name_clusters(salience, genes, markers, int(p["name_top_k"]))
    salient = salience_table(salience, genes, names, int(p["top_k"]))
    assignments = pd.DataFrame({"cell_id": adata.obs_names.astype(str), "cluster": clusters,
                                OBS_CELL_TYPE: np.asarray(names)[clusters],
                                "confidence": proba[np.arange(clusters.size), clusters]}, columns=ASSIGNMENT_COLUMNS)
    metrics = _metrics(adata, p, integrate, clusters, val, pred, hist, genes, names, name_scores, salient, markers)
    return CelltypeResult(assignments, salient, metrics, model, genes)


def _metrics(adata, p, integrate, clusters, val, pred, hist, genes, names, name_scores, salient, markers) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    out = {"n_cells": int(adata.n_obs), "n_genes": len(genes), "n_clusters": int(clusters.max()) + 1,
           "cluster_sizes": {int(k): int(v) for k, v in enumerate(np.bincount(clusters))},
           "names": {int(k): n for k, n in enumerate(names)}, "integrated_over": integrate,
           "params": {k: v for k, v in p.items()},
           "classifier": {"val_cells": int(val.sum()), "epochs": len(hist), "history": hist,
                          "val_accuracy": float(accuracy_score(clusters[val], pred[val])) if val.any() else None,
                          "val_macro_f1": float(f1_score(clusters[val], pred[val], average="macro"))
                          if val.any() else None},
           "name_scores": {int(k): v for k, v in name_scores.items()}}
    known = adata.obs["cell_type"] if "cell_type" in adata.obs else None
    out["known_cell_types"] = known_type_scores(clusters, known) if known is not None else None
    if markers is not None:
        top = int(p["marker_top_k"])
        out["marker_hits"] = marker_hits(salient, markers, dict(enumerate(names)), top)
        if known is not None:
            majority = {k: v["majority"] for k, v in out["known_cell_types"]["clusters"].items()}
            out["marker_hits_known_types"] = marker_hits(salient, markers, majority, top)
            out["named_types"] = named_type_scores(np.asarray(names)[clusters], known)
    return out


def apply_cell_types(adata: ad.AnnData, assignments: pd.DataFrame | str | Path) -> ad.AnnData:
    """Copy of ``adata`` with ``obs["cellgnn_cell_type"]`` (categorical), ``obs["cellgnn_cluster"]``
    and ``obs["cellgnn_cell_type_confidence"]`` from an ``assignments.csv`` table (or its path);
    when ``adata`` has no ``obs["cell_type"]``, the calls become it (what the graph, explain and
    augment stages read).

    Every cell of ``adata`` needs a row (matched by ``cell_id`` = obs name); extra rows are ignored.
    """
    where = str(assignments) if isinstance(assignments, (str, Path)) else "assignments"
    df = pd.read_csv(assignments, dtype={"cell_id": str}) if isinstance(assignments, (str, Path)) else assignments
    missing_cols = sorted(set(ASSIGNMENT_COLUMNS) - set(df.columns))
    if missing_cols:
        raise CellgnnInputError(f"assignments lack column(s) {missing_cols}", file=where, field="columns",
                                fix="rerun the celltype stage")
    df = df.drop_duplicates("cell_id").set_index(df.drop_duplicates("cell_id")["cell_id"].astype(str))
    cells = adata.obs_names.astype(str)
    absent = ~cells.isin(df.index)
    if absent.any():
        raise CellgnnInputError(f"{int(absent.sum())} of {adata.n_obs} cells have no assignment (e.g. "
                                f"{list(cells[absent][:3])})", file=where, field="cell_id",
                                fix="rerun the celltype stage on this dataset's preprocessed.h5ad")
    out = adata.copy()
    rows = df.loc[cells]
    out.obs[OBS_CELL_TYPE] = pd.Categorical(rows[OBS_CELL_TYPE].astype(str).to_numpy())
    out.obs[OBS_CLUSTER] = pd.Categorical(rows["cluster"].astype(int).to_numpy())
    out.obs[OBS_CONFIDENCE] = rows["confidence"].astype(float).to_numpy()
    if "cell_type" not in out.obs:
        out.obs["cell_type"] = out.obs[OBS_CELL_TYPE].copy()
    return out


def celltype_stage(adata_path: str, out_assignments: str, out_salient: str, out_metrics: str, cfg: dict,
                   device_pref: str = "auto", out_adata: str | None = None) -> CelltypeResult:
    """Rule ``celltype``: read ``preprocessed.h5ad``, run :func:`run_celltype`, write the three
    tables and, with ``out_adata``, the preprocessed data with the calls in ``obs``
    (:func:`apply_cell_types`)."""
    from .io import read_h5ad, write_csv, write_h5ad, write_json
    from .utils import get_device

    p = resolve_params(cfg)
    markers = read_markers(p["markers"]) if p["markers"] else None  # bad table: fail before loading data
    adata = read_h5ad(adata_path, "rule preprocess")
    res = run_celltype(adata, p, get_device(device_pref), markers=markers, where=adata_path)
    write_csv(res.assignments, out_assignments)
    write_csv(res.salient, out_salient)
    write_json(res.metrics, out_metrics)
    if out_adata:
        write_h5ad(apply_cell_types(adata, res.assignments), out_adata)
    LOG.info("%d clusters; classifier held-out accuracy %.3f; known types: %s", res.metrics["n_clusters"],
             res.metrics["classifier"]["val_accuracy"] or float("nan"),
             "ARI %.3f" % res.metrics["known_cell_types"]["ari"] if res.metrics["known_cell_types"] else "none")
    return res
