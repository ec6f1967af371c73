"""Benchmark: edge-feature pretraining and one mini-batched gat_ef epoch on a large simulated graph.

Usage: python bench/edge_features.py [--cells 100000] [--genes 1500] [--threads 2]
       [--aux-epochs 5] [--walk-length 80] [--walks-per-node 10]

Builds a simulated cell graph in the graph-stage contract (clustered PCA coordinates,
cell types, donors, 7 classes, genes min–max scaled, symmetric kNN k=15 with fuzzy
weights and self-loops; cached under bench/out/), then runs each phase in its own
spawned process so that its peak resident memory (``ru_maxrss``) is its own:

1. graph load only (the baseline every phase pays);
2. edge-feature pretraining: two auxiliary GATs (Cluster-GCN batches) + curvature +
   node2vec (all four groups, 18 columns), one ``compute_edge_features`` call with
   ``--threads`` threads (with 2 or more, node2vec runs beside the auxiliary GATs, so the
   per-group seconds overlap and do not add up to the total);
3. one gat_ef training epoch with Cluster-GCN mini-batches, then one full-graph
   inference pass (set branch chunked);
4. the same epoch for plain gat (the lead's baseline), for the ratio.

Prints seconds and peak RSS per phase, and the ratios peak/24 GiB and
gat_ef-epoch/gat-epoch measured in this run. The aux-GAT time is reported per epoch
as well, since the number of epochs is a config choice.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

BUDGET_GIB = 24.0


def make_graph(n: int, genes: int, k: int, seed: int, path: Path) -> None:
    import numpy as np
    import torch

    from cellgnn.edge_features.attention import with_all_self_loops
    from cellgnn.knn import knn_search

    rng = np.random.default_rng(seed)
    n_types, n_donors, n_pcs = 8, 4, 30
    ct = rng.integers(0, n_types, n)
    donor = rng.integers(0, n_donors, n)
    y = rng.integers(0, 7, n)
    centres = rng.normal(0, 4, (n_types, n_pcs))
    pca = (centres[ct] + rng.normal(0, 1, (n, n_pcs)) + 0.5 * donor[:, None] + 0.3 * y[:, None]).astype(np.float32)
    load = rng.normal(0, 1, (n_pcs, genes)).astype(np.float32) / np.sqrt(n_pcs)
    x = pca @ load
    x -= x.min(0)
    x /= x.max(0)
    idx, dist = knn_search(pca, k)
    rho = dist[:, :1]
    ex = np.maximum(dist - rho, 0)
    w = np.exp(-ex / np.maximum(ex.mean(1, keepdims=True), 1e-8))
    import scipy.sparse as sp

    a = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    a = (a + a.T - a.multiply(a.T)).tocoo()
    ei = torch.tensor(np.vstack([a.row, a.col]), dtype=torch.long)
    ew = torch.tensor(a.data, dtype=torch.float32)
    ei = with_all_self_loops(ei, n)
    ew = torch.cat([ew, torch.ones(ei.shape[1] - ew.shape[0])])
    order = torch.from_numpy(np.lexsort((ei[0].numpy(), ei[1].numpy())))
    split = rng.choice(3, n, p=[0.7, 0.15, 0.15])
    graph = {"x": torch.from_numpy(x.astype(np.float32)), "pca": torch.from_numpy(pca), "y": torch.from_numpy(y),
             "edge_index": ei[:, order], "edge_weight": ew[order],
             "train_mask": torch.from_numpy(split == 0), "val_mask": torch.from_numpy(split == 1),
             "test_mask": torch.from_numpy(split == 2), "donor": torch.from_numpy(donor),
             "cell_type": torch.from_numpy(ct), "classes": [f"c{i}" for i in range(7)],
             "donors": [f"d{i}" for i in range(n_donors)], "cell_types": [f"t{i}" for i in range(n_types)],
             "graph_mode": "transductive", "self_loops": True, "split_mode": "cells", "seed": seed}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(graph, path)


def _phase(name: str, args: dict, queue) -> None:
    import torch

    torch.set_num_threads(args["threads"])
    t0 = time.perf_counter()
    graph = torch.load(args["graph"], weights_only=False)
    out = {"load_s": time.perf_counter() - t0}
    if name == "pretrain":
        from cellgnn.edge_features import compute_edge_features

        cfg = {"aux_epochs": args["aux_epochs"], "batching": "cluster", "num_parts": args["num_parts"],
               "parts_per_batch": args["parts_per_batch"],
               "node2vec": {"walk_length": args["walk_length"], "walks_per_node": args["walks_per_node"]}}
        timings = {}
        t = time.perf_counter()  # one call, as the workflow's rule makes it (node2vec beside the aux GATs)
        ef = compute_edge_features(graph, cfg, seed=0, timings=timings)
        out["seconds"] = time.perf_counter() - t
        out.update({f"{g}_s": v for g, v in timings.items()})
        torch.save(ef["edge_attr"], args["ef"])
    elif name in ("gat_ef_epoch", "gat_epoch"):
        import numpy as np

        from cellgnn.batching import ClusterBatches, pca_partition
        from cellgnn.models.edge_models import GATEF

        ea = None
        if name == "gat_ef_epoch":  # timing does not depend on the values; random when pretraining was skipped
            ea = (torch.load(args["ef"]) if Path(args["ef"]).exists()
                  else torch.rand(graph["edge_index"].shape[1], 18))
        n_cls, g = len(graph["classes"]), graph["x"].shape[1]
        if name == "gat_ef_epoch":
            model = GATEF(g, n_cls, edge_dim=ea.shape[1])
        else:
            from torch_geometric.nn import GATConv

            class GAT(torch.nn.Module):  # the original study's 2-layer GAT baseline
                def __init__(self):
                    super().__init__()
                    self.c1 = GATConv(g, 8, heads=8, dropout=0.4)
                    self.c2 = GATConv(64, n_cls, heads=8, concat=False, dropout=0.4)

                def forward(self, x, ei, ea=None):
                    return self.c2(torch.nn.functional.elu(self.c1(x, ei)), ei)
            model = GAT()
        opt = torch.optim.Adagrad(model.parameters(), lr=1e-3, weight_decay=5e-4)
        t = time.perf_counter()
        # partition and batch index (its edge CSR), both built once per training
        parts = pca_partition(np.asarray(graph["pca"]), args["num_parts"])
        batches = ClusterBatches(graph["edge_index"], parts, args["parts_per_batch"], seed=0)
        out["partition_s"] = time.perf_counter() - t
        t = time.perf_counter()
        n_batches = 0
        for b in batches:
            model.train()
            opt.zero_grad()
            logits = model(graph["x"][b.node_ids], b.edge_index, None if ea is None else ea[b.edge_ids])
            m = graph["train_mask"][b.node_ids]
            loss = torch.nn.functional.cross_entropy(logits[m], graph["y"][b.node_ids][m])
            loss.backward()
            opt.step()
            n_batches += 1
        out["epoch_s"] = time.perf_counter() - t
        out["batches"] = n_batches
        t = time.perf_counter()
        model.eval()
        with torch.no_grad():
            model(graph["x"], graph["edge_index"], ea)
        out["full_inference_s"] = time.perf_counter() - t
        out["seconds"] = out["epoch_s"]
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    queue.put(out)


def run_phase(name: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_phase, args=(name, args, q))
    p.start()
    while True:
        try:
            res = q.get(timeout=5)
            break
        except Exception:  # noqa: BLE001 - queue.Empty: check the child is still alive
            if not p.is_alive():
                raise RuntimeError(f"phase {name} failed (exit code {p.exitcode}); see its traceback above")
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--genes", type=int, default=1500)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--aux-epochs", type=int, default=5)
    ap.add_argument("--walk-length", type=int, default=80)
    ap.add_argument("--walks-per-node", type=int, default=10)
    ap.add_argument("--num-parts", type=int, default=0, help="default: cells // 100")
    ap.add_argument("--parts-per-batch", type=int, default=50)
    ap.add_argument("--phases", default="load,pretrain,gat_ef_epoch,gat_epoch",
                    help="comma-separated subset of load,pretrain,gat_ef_epoch,gat_epoch")
    a = ap.parse_args()
    out = ROOT / "bench" / "out"
    gpath = out / f"graph_{a.cells}_{a.genes}_{a.k}.pt"
    num_parts = a.num_parts or max(1, a.cells // 100)
    if not gpath.exists():
        t = time.perf_counter()
        make_graph(a.cells, a.genes, a.k, 0, gpath)
        print(f"built graph in {time.perf_counter() - t:.1f} s -> {gpath}", flush=True)
    args = {"graph": str(gpath), "ef": str(out / f"ef_{a.cells}.pt"), "threads": a.threads,
            "aux_epochs": a.aux_epochs, "walk_length": a.walk_length, "walks_per_node": a.walks_per_node,
            "num_parts": num_parts, "parts_per_batch": a.parts_per_batch}
    import torch

    g = torch.load(gpath, weights_only=False)
    print(f"graph: {a.cells} cells, {a.genes} genes, {g['edge_index'].shape[1]} edges (incl. self-loops); "
          f"{a.threads} torch threads; Cluster-GCN {num_parts} parts, {a.parts_per_batch} per batch", flush=True)
    del g
    res = {}
    for name in a.phases.split(","):
        res[name] = run_phase(name, args)
        print(name, {k: round(v, 2) if isinstance(v, float) else v for k, v in res[name].items()}, flush=True)
    if set(res) != {"load", "pretrain", "gat_ef_epoch", "gat_epoch"}:
        return
    pre = res["pretrain"]
    aux_per_epoch = (pre["celltype_attention_s"] + pre["donor_attention_s"]) / (2 * a.aux_epochs)
    print("\n== summary ==")
    print(f"edge-feature pretraining: {pre['seconds']:.1f} s wall with {a.aux_epochs} aux epochs per head "
          f"(aux GAT incl. readout {aux_per_epoch:.1f} s/epoch/head; curvature {pre['curvature_s']:.1f} s; "
          f"node2vec walk_length {a.walk_length} x {a.walks_per_node} walks {pre['node2vec_s']:.1f} s); "
          f"peak RSS {pre['peak_rss_gib']:.2f} GiB")
    print(f"gat_ef: one mini-batched epoch {res['gat_ef_epoch']['epoch_s']:.1f} s, full-graph inference "
          f"{res['gat_ef_epoch']['full_inference_s']:.1f} s, peak RSS {res['gat_ef_epoch']['peak_rss_gib']:.2f} GiB")
    print(f"gat: one mini-batched epoch {res['gat_epoch']['epoch_s']:.1f} s, peak RSS "
          f"{res['gat_epoch']['peak_rss_gib']:.2f} GiB; graph load alone {res['load']['peak_rss_gib']:.2f} GiB")
    worst = max(r["peak_rss_gib"] for r in res.values())
    print(f"ratio peak RSS / {BUDGET_GIB:.0f} GiB budget: {worst / BUDGET_GIB:.3f}")
    print(f"ratio gat_ef epoch / gat epoch: {res['gat_ef_epoch']['epoch_s'] / res['gat_epoch']['epoch_s']:.2f}")


if __name__ == "__main__":
    main()
