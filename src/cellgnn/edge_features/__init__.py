"""Self-supervised edge features, aligned row for row with the graph's ``edge_index``.

Groups (selectable with ``edge_features.groups``):

- ``celltype_attention``: ``heads`` columns, first-layer attention of an auxiliary GAT
  trained on the training cells to predict cell type;
- ``donor_attention``: ``heads`` columns, same for donor/sample (training cells only,
  so in ``donors`` split mode only training donors are ever seen);
- ``curvature``: Forman–Ricci curvature from the graph weights, rescaled to [−1, 1];
- ``node2vec``: ⟨z_i, z_j⟩ of node2vec embeddings, rescaled to [−1, 1].

Self-loops: attention columns hold the attention a node pays to itself; curvature
and node2vec are rescaled over the non-loop edges and set to exactly 0 on loops
(a loop has no curvature, and ⟨z_i, z_i⟩ = ‖z_i‖² is not a similarity to a neighbour).

Threads: with ``threads`` >= 2 and node2vec requested beside an attention group, node2vec
(compiled, single-threaded, GIL released) runs in a background thread while the
auxiliary GATs train with ``threads - 1`` torch threads; otherwise each group runs in
turn with all ``threads``. The groups share no state, so the node2vec column is the same
either way; the attention columns, like any torch computation, may differ in float
rounding between torch thread counts, and are the same for the same ``threads``.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import CellgnnInputError
from .attention import attention_features
from .curvature import forman_curvature, rescale_symmetric
from .node2vec import edge_dot, node2vec_embeddings

LOG = logging.getLogger(__name__)

GROUPS = ("celltype_attention", "donor_attention", "curvature", "node2vec")

DEFAULTS = {
    "groups": list(GROUPS),
    "heads": 8,
    "hidden": 8,
    "dropout": 0.4,
    "aux_epochs": 100,
    "aux_lr": 0.005,
    "aux_weight_decay": 5e-4,
    "batching": "full",
    "num_parts": 64,
    "parts_per_batch": 8,
    "curvature_include_self_loops": False,
    "checkpoint_every": 10,
    "node2vec": {"dim": 16, "walk_length": 20, "walks_per_node": 10, "p": 1.0, "q": 1.0, "window": 5,
                 "negatives": 5, "epochs": 1, "batch_size": 16384, "lr": 0.025},
}


def _config(cfg: dict | None) -> dict:
    out = {**DEFAULTS, **(cfg or {})}
    out["node2vec"] = {**DEFAULTS["node2vec"], **((cfg or {}).get("node2vec") or {})}
    return out


def validate_inputs(graph: dict, cfg: dict, file: str | None = None) -> None:
    """Raise ``CellgnnInputError`` before any work if the graph cannot give the requested groups."""
    groups = cfg["groups"]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups or len(set(groups)) != len(groups):
        raise CellgnnInputError(f"edge-feature groups must be distinct names from {list(GROUPS)}, got {groups}",
                                file=file, field="edge_features.groups", fix="list one or more known groups")
    for key in ("x", "edge_index", "train_mask"):
        if key not in graph:
            raise CellgnnInputError(f"graph has no '{key}'", file=file, field=key,
                                    fix="rebuild the graph with the graph rule")
    ei = graph["edge_index"]
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise CellgnnInputError(f"edge_index must have shape [2, E], got {tuple(ei.shape)}", file=file,
                                field="edge_index", fix="rebuild the graph with the graph rule")
    train = np.asarray(graph["train_mask"], dtype=bool)
    if "celltype_attention" in groups:
        cts = list(graph.get("cell_types") or [])
        if "cell_type" not in graph or not cts or cts == ["unknown"]:
            raise CellgnnInputError("the celltype_attention group needs cell types but the graph has none",
                                    file=file, field="cell_type",
                                    fix="provide obs['cell_type'] in the data, or drop celltype_attention "
                                        "from edge_features.groups")
    if "donor_attention" in groups:
        if "donor" not in graph:
            raise CellgnnInputError("the donor_attention group needs donors but the graph has none", file=file,
                                    field="donor", fix="drop donor_attention from edge_features.groups")
        if np.unique(np.asarray(graph["donor"])[train]).size < 2:
            raise CellgnnInputError("the donor_attention group needs >= 2 donors among the training cells",
                                    file=file, field="donor",
                                    fix="drop donor_attention from edge_features.groups")
    if ("curvature" in groups) and "edge_weight" not in graph:
        raise CellgnnInputError("the curvature group needs edge weights", file=file, field="edge_weight",
                                fix="rebuild the graph with the graph rule")


def compute_edge_features(graph: dict, cfg: dict, seed: int, device: torch.device | str = "cpu",
                          file: str | None = None, resume: str | Path | None = None, threads: int | None = None,
                          timings: dict | None = None) -> dict:
    """Edge features of ``graph`` (contract dict) per ``cfg`` (the ``edge_features`` config section).

    resume: path prefix of the auxiliary GATs' resumable checkpoints (``<resume>.<group>_resume.pt``).
    threads: CPU threads to use (default: torch's current count); see the module docstring.
    timings: if given, filled with seconds per group (from its start to its end; node2vec's
    overlaps the attention groups' when it runs beside them).

    Returns ``{"edge_attr": float32 [E, F], "edge_index": int64 [2, E] (copy),
    "columns": list[str] (F), "groups": {group: [column indices]}, "self_loop": bool [E]}``.
    """
    cfg = _config(cfg)
    validate_inputs(graph, cfg, file)
    threads = torch.get_num_threads() if threads is None else max(1, int(threads))
    timings = {} if timings is None else timings
    ei = torch.as_tensor(graph["edge_index"], dtype=torch.long)
    ei_np = ei.numpy()
    n = int(graph["x"].shape[0])
    loop = ei_np[0] == ei_np[1]
    train = np.asarray(graph["train_mask"], dtype=bool)
    ew = np.asarray(graph["edge_weight"]) if "edge_weight" in graph else None

    def node2vec_column(g_i: int, n2v_threads: int) -> np.ndarray:
        t = time.perf_counter()
        emb = node2vec_embeddings(ei_np, ew, n, seed=seed + 1000 * g_i, device=device, threads=n2v_threads,
                                  **cfg["node2vec"])
        col = _loops_to_zero(rescale_symmetric(edge_dot(emb, ei_np), ~loop), loop)
        timings["node2vec"] = time.perf_counter() - t
        return col

    attention = [g for g in cfg["groups"] if g in ("celltype_attention", "donor_attention")]
    overlap = threads >= 2 and "node2vec" in cfg["groups"] and bool(attention)
    blocks, columns, groups = [], [], {}
    torch_threads = torch.get_num_threads()
    with ThreadPoolExecutor(max_workers=1) as pool:
        n2v = pool.submit(node2vec_column, cfg["groups"].index("node2vec"), 1) if overlap else None
        torch.set_num_threads(threads - 1 if overlap else threads)
        try:
            for g_i, group in enumerate(cfg["groups"]):
                start, t = len(columns), time.perf_counter()
                if group in ("celltype_attention", "donor_attention"):
                    key, tag = ("cell_type", "celltype") if group == "celltype_attention" else ("donor", "donor")
                    alpha = attention_features(
                        graph, np.asarray(graph[key]), train, heads=cfg["heads"], hidden=cfg["hidden"],
                        dropout=cfg["dropout"], epochs=cfg["aux_epochs"], lr=cfg["aux_lr"],
                        weight_decay=cfg["aux_weight_decay"], batching=cfg["batching"],
                        num_parts=cfg["num_parts"], parts_per_batch=cfg["parts_per_batch"],
                        seed=seed + 1000 * g_i, device=device, name=tag,
                        checkpoint=None if resume is None else f"{resume}.{tag}_resume.pt",
                        checkpoint_every=cfg["checkpoint_every"])
                    blocks.append(alpha)
                    columns += [f"{tag}_att_h{h}" for h in range(alpha.shape[1])]
                    if overlap and group == attention[-1]:
                        torch.set_num_threads(threads)  # the last auxiliary GAT is done
                    timings[group] = time.perf_counter() - t
                elif group == "curvature":
                    c = forman_curvature(ei_np, np.asarray(graph["edge_weight"]), n,
                                         include_self_loops=cfg["curvature_include_self_loops"])
                    blocks.append(_loops_to_zero(rescale_symmetric(c, ~loop), loop))
                    columns.append("curvature")
                    timings[group] = time.perf_counter() - t
                else:
                    blocks.append(n2v.result() if n2v is not None else node2vec_column(g_i, threads))
                    columns.append("node2vec")
                groups[group] = list(range(start, len(columns)))
                LOG.info("edge features: group %s -> columns %s", group, groups[group])
        finally:
            torch.set_num_threads(torch_threads)
    attr = np.concatenate([b.reshape(ei.shape[1], -1) for b in blocks], axis=1).astype(np.float32)
    return {"edge_attr": torch.from_numpy(attr), "edge_index": ei.clone(), "columns": columns,
            "groups": groups, "self_loop": torch.from_numpy(loop)}


def _loops_to_zero(v: np.ndarray, loop: np.ndarray) -> np.ndarray:
    v = v.astype(np.float32)
    v[loop] = 0.0
    return v


def check_edge_features(ef: dict, graph: dict, file: str | None = None) -> None:
    """Raise ``CellgnnInputError`` unless ``ef`` is aligned row for row with ``graph['edge_index']``."""
    for key in ("edge_attr", "edge_index", "columns", "groups"):
        if key not in ef:
            raise CellgnnInputError(f"edge-feature file has no '{key}'", file=file, field=key,
                                    fix="rerun the edge_features rule")
    attr, ei = ef["edge_attr"], torch.as_tensor(graph["edge_index"])
    if attr.ndim != 2 or attr.shape[0] != ei.shape[1]:
        raise CellgnnInputError(f"edge_attr has {attr.shape[0] if attr.ndim else 0} rows but the graph has "
                                f"{ei.shape[1]} edges", file=file, field="edge_attr",
                                fix="rerun the edge_features rule on this graph (delete the stale file)")
    if not torch.equal(torch.as_tensor(ef["edge_index"]), ei):
        raise CellgnnInputError("edge_index differs from the graph's: rows would be misaligned", file=file,
                                field="edge_index", fix="rerun the edge_features rule on this graph")
    if attr.shape[1] != len(ef["columns"]):
        raise CellgnnInputError(f"{attr.shape[1]} columns but {len(ef['columns'])} column names", file=file,
                                field="columns", fix="rerun the edge_features rule")


def load_edge_features(path: str | Path, graph: dict, drop_group: str | None = None) -> dict:
    """Load ``edge_features/{split}.pt`` (on the CPU) and check it is aligned row for row
    with ``graph['edge_index']``; ``drop_group``: leave that group out (ablations).

    Returns the dict :func:`compute_edge_features` wrote (``edge_attr [E, F]``, ``columns``,
    ``groups``, ...). Raises ``CellgnnInputError`` for an unreadable or misaligned file.
    """
    try:
        ef = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CellgnnInputError(f"cannot read edge features ({e})", file=str(path),
                                fix="delete it and rerun the edge_features stage") from e
    check_edge_features(ef, graph, file=str(path))
    if drop_group is not None:
        if drop_group not in ef["groups"] or len(ef["groups"]) < 2:
            raise CellgnnInputError(f"cannot drop group '{drop_group}' from {list(ef['groups'])}", file=str(path),
                                    field="edge_features.groups", fix="ablate a computed group; keep at least one")
        ef = select_groups(ef, [g for g in ef["groups"] if g != drop_group])
    return ef


def select_groups(ef: dict, keep: list[str]) -> dict:
    """Copy of ``ef`` holding only the groups in ``keep`` (in ``ef``'s column order); for ablations."""
    missing = [g for g in keep if g not in ef["groups"]]
    if missing or not keep:
        raise CellgnnInputError(f"edge-feature groups {missing or keep} not available; have "
                                f"{list(ef['groups'])}", field="edge_features.groups",
                                fix="choose groups computed by the edge_features rule")
    cols, groups = [], {}
    for g, idx in ef["groups"].items():
        if g in keep:
            groups[g] = list(range(len(cols), len(cols) + len(idx)))
            cols += idx
    out = dict(ef)
    out["edge_attr"] = ef["edge_attr"][:, cols]
    out["columns"] = [ef["columns"][c] for c in cols]
    out["groups"] = groups
    return out


def run_edge_features(graph_path: str, out_path: str, cfg: dict, seed: int, device: str = "auto") -> dict:
    """Rule edge_features: load ``graph/{split}.pt``, compute the features, write ``edge_features/{split}.pt``.

    Input problems are raised before any training; the output is written atomically.
    Returns the saved dict.
    """
    from ..graph import load_graph
    from ..io import torch_save
    from ..utils import get_device, seed_everything

    graph = load_graph(graph_path)
    full = _config(cfg)
    validate_inputs(graph, full, graph_path)
    dev = get_device(device)
    seed_everything(seed)
    resume = Path(out_path).with_suffix("")  # <split>.<group>_resume.pt beside the output, not an output
    ef = compute_edge_features(graph, full, seed, device=dev, file=graph_path, resume=resume)
    check_edge_features(ef, graph, out_path)
    ef["config"] = full
    ef["seed"] = int(seed)
    torch_save(ef, out_path)
    for f in Path(out_path).parent.glob(f"{resume.name}.*_resume.pt"):
        f.unlink()
    LOG.info("wrote %s: edge_attr %s, columns %s", out_path, tuple(ef["edge_attr"].shape), ef["columns"])
    return ef
