"""Benchmark: integrated gradients on 10,000 cells on CPU, wall time and peak memory.

Builds a clustered 10,000-cell × 2,000-gene dataset with a symmetric kNN graph (k = 15,
self-loops), trains the study's 2-layer GAT (8 heads × 8 units) for a few epochs, then
explains every cell with ``cellgnn.explain.integrated_gradients`` as the workflow does
(per-cell copies of the 2-hop computation graphs, completeness tolerance 1%, class 0 as
the control: the mean control cell of each cell type as the reference, and the log-odds
of each cell's class against the control as the explained score). Prints the wall time of the IG
pass, cells per second, steps used, the completeness error and the process's peak
resident memory (``ru_maxrss``) against the 24 GiB budget.

    python bench/explain.py                 # 10,000 cells, 2,000 genes
    python bench/explain.py --cells 1000    # quick look
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cellgnn.explain import control_reference, integrated_gradients  # noqa: E402
from cellgnn.knn import knn_search  # noqa: E402


class StudyGAT(torch.nn.Module):
    """GATConv(G → 8×8) → ELU → GATConv(64 → C), as the original study's GAT."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        from torch_geometric.nn import GATConv

        self.c1 = GATConv(in_dim, 8, heads=8, add_self_loops=False, dropout=0.4)
        self.c2 = GATConv(64, n_classes, heads=1, add_self_loops=False, dropout=0.4)

    def forward(self, x, edge_index, edge_attr=None):
        return self.c2(torch.nn.functional.elu(self.c1(x, edge_index)), edge_index)


def make_data(n: int, g: int, k: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    ct = rng.integers(0, 6, n)
    centres = rng.normal(0, 1, (n_classes * 6, 30))
    pca = centres[y * 6 + ct] + rng.normal(0, 0.7, (n, 30))
    load = rng.normal(0, 0.3, (30, g))
    x = 1 / (1 + np.exp(-(pca @ load) + 1.5))  # in (0, 1), like min-max scaled genes
    idx, _ = knn_search(pca.astype(np.float32), k)
    src = np.concatenate([idx.ravel(), np.repeat(np.arange(n), k), np.arange(n)])
    dst = np.concatenate([np.repeat(np.arange(n), k), idx.ravel(), np.arange(n)])
    pairs = np.unique(np.stack([src, dst], 1), axis=0)
    pairs = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]
    return (torch.tensor(x, dtype=torch.float32), torch.from_numpy(pairs.T.copy()).long(),
            torch.from_numpy(y).long(), ct)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=10_000)
    ap.add_argument("--genes", type=int, default=2_000)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--n-steps", type=int, default=8)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--batch-cells", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x, ei, y, ct = make_data(a.cells, a.genes, a.k, a.classes, a.seed)
    model = StudyGAT(a.genes, a.classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x, ei), y).backward()
        opt.step()
    model.eval()
    acc = (model(x, ei).argmax(1) == y).float().mean().item()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    reference = control_reference(x, y.numpy(), ct, np.ones(a.cells, bool), 0, 6)
    res = integrated_gradients(model, x, ei, np.arange(a.cells), y.numpy(), ct, 6, n_steps=a.n_steps,
                               tolerance=a.tolerance, batch_cells=a.batch_cells, reference=reference,
                               contrast=0)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    peak = ru1.ru_maxrss / 2**20
    b = res.batches
    print(f"data: {a.cells} cells x {a.genes} genes, {ei.shape[1]} edges (k={a.k}, self-loops), "
          f"{a.classes} classes; GAT train accuracy {acc:.3f}; threads {a.threads}")
    print(f"computation graphs: {b['n_nodes'].sum() / a.cells:.1f} nodes per cell on average")
    print(f"integrated gradients: {wall:.1f} s wall, {a.cells / wall:.1f} cells/s; "
          f"steps used {sorted(set(b['n_steps']))}; completeness rel. error max {b['completeness_rel_error'].max():.2e}")
    print(f"load average during the run (1/5/15 min): {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"peak RSS {peak:.2f} GiB (before IG {rss_before:.2f} GiB); budget 24 GiB -> "
          f"{peak / 24:.1%} of budget; attributions {res.attr.nbytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
