"""Scale benchmark: wall time and peak memory per stage from 10k to 1M simulated cells.

    python bench/scale.py --cells 10000 100000 1000000 --threads 2

Each cell count runs in its own process (so peak memory is that run's own), on a
simulated count matrix (N cells × 2,000 genes, CSR, ~150 non-zeros per cell,
10 cell types, 3 condition labels) generated directly in sparse form. Stages:

- ``preprocess``: ``cellgnn.preprocess.preprocess`` (QC, library-size normalize,
  log1p, PCA to 50 components);
- ``graph``: ``cellgnn.graph.knn_graph`` (k=15; ``auto`` = exact up to
  ``--ann-threshold`` cells, hnswlib up to 500k, cellgnn's NN-descent above) — timed side by side, in the same run,
  with ``scanpy.pp.neighbors`` defaults on the same PCA; prints the time ratio and
  recall@15 of both against exact kNN on 2,000 sampled cells;
- ``partition``: k-means clusters for Cluster-GCN mini-batches;
- ``train_epoch``: one epoch of the study's GAT (``cellgnn.models.build_model("gat")``)
  over Cluster-GCN mini-batches, node features = the 2,000 normalized genes kept
  sparse and densified per batch;
- ``inference``: a batched forward pass over every cell.

Peak memory is the process's peak resident set size sampled every 20 ms during the
stage (GiB). Writes ``bench/out/scale.{json,csv,png,pdf}`` and prints the log–log
slope of time and memory against cells per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def simulate_sparse(n_cells: int, n_genes: int = 2000, nnz_per_cell: int = 150, n_types: int = 10,
                    n_classes: int = 3, seed: int = 0, chunk: int = 100_000):
    """Counts CSR float32 ``[n_cells, n_genes]`` + cell types and labels, generated chunk by chunk.

    Each cell type has its own gene-usage profile (Dirichlet); each condition up-weights
    its own 40 response genes. A cell draws Poisson(nnz_per_cell) gene hits from its
    profile; counts are 1 + Poisson(0.6) per hit (duplicate hits add up).
    """
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    base = rng.dirichlet(np.full(n_genes, 0.3), size=n_types)
    resp = rng.choice(n_genes, size=(n_classes, 40), replace=False)
    profiles = np.empty((n_types, n_classes, n_genes))
    for t in range(n_types):
        for c in range(n_classes):
            p = base[t].copy()
            p[resp[c]] += 2.0 / n_genes  # condition response genes: + twice the mean gene's usage
            profiles[t, c] = p / p.sum()
    cum = np.cumsum(profiles, axis=2)
    cell_type = rng.integers(0, n_types, n_cells)
    label = rng.integers(0, n_classes, n_cells)
    blocks = []
    for start in range(0, n_cells, chunk):
        stop = min(n_cells, start + chunk)
        m = stop - start
        nnz = rng.poisson(nnz_per_cell, m)
        rows = np.repeat(np.arange(m), nnz)
        u = rng.random(rows.size)
        t, c = cell_type[start:stop][rows], label[start:stop][rows]
        cols = np.empty(rows.size, dtype=np.int64)
        for tt in range(n_types):
            for cc in range(n_classes):
                sel = (t == tt) & (c == cc)
                cols[sel] = np.searchsorted(cum[tt, cc], u[sel])
        cols = np.minimum(cols, n_genes - 1)
        vals = (1 + rng.poisson(0.6, rows.size)).astype(np.float32)
        blk = sp.csr_matrix((vals, (rows, cols)), shape=(m, n_genes), dtype=np.float32)
        blk.sum_duplicates()
        blocks.append(blk)
    X = sp.vstack(blocks, format="csr", dtype=np.float32)
    return X, cell_type, label


def timed_stage(out: dict, mem: "PeakRSS", n: int, name: str, fn):
    """Run ``fn()``, record its wall seconds and peak RSS (GiB) in ``out["stages"][name]``, print a line."""
    mem.reset()
    t0 = time.perf_counter()
    res = fn()
    dt = time.perf_counter() - t0
    out["stages"][name] = {"seconds": round(dt, 3), "peak_gib": round(mem.peak / 2**30, 3)}
    print(f"[{n:>9,} cells] {name:<16} {dt:9.2f} s   peak RSS {mem.peak / 2**30:6.2f} GiB", flush=True)
    return res


class PeakRSS:
    """Sample this process's RSS every ``interval`` s in a thread; ``peak`` in bytes since ``reset``."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def reset(self):
        self.peak = self.proc.memory_info().rss

    def stop(self):
        self._stop.set()
        self._t.join()


def run_one(n: int, args) -> dict:
    """All stages for ``n`` cells in this process; returns {stage: {seconds, peak_gib}, ...}."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scanpy as sc
    import torch

    import cellgnn.graph
    from cellgnn.graph import knn_graph
    from cellgnn.knn import auto_method, exact_neighbors_of, knn_search, recall_at_k
    from cellgnn.batching import ClusterBatches, kmeans_partition, predict, train_epoch
    from cellgnn.models import build_model
    from cellgnn.utils import seed_everything

    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    mem = PeakRSS()
    out: dict = {"cells": n, "genes": args.genes, "threads": args.threads, "seed": args.seed, "stages": {}}

    def stage(name, fn):
        return timed_stage(out, mem, n, name, fn)

    X, cell_type, label = stage("simulate", lambda: simulate_sparse(n, args.genes, seed=args.seed))
    adata = ad.AnnData(X=X, obs=pd.DataFrame({"label": pd.Categorical(label.astype(str)),
                                              "donor": pd.Categorical((np.arange(n) % 8).astype(str)),
                                              "cell_type": pd.Categorical(cell_type.astype(str))},
                                             index=[f"c{i}" for i in range(n)]),
                       var=pd.DataFrame(index=[f"G{j}" for j in range(args.genes)]))
    del X
    pcfg = {"expect_counts": True, "min_genes": 10, "min_cells": 3, "max_mito_fraction": 1.0,
            "target_sum": 1e4, "transform": "log1p", "hvg": None, "n_pcs": 50}
    from cellgnn.preprocess import preprocess

    adata, _ = stage("preprocess", lambda: preprocess(adata, pcfg, seed=args.seed))
    pca = np.ascontiguousarray(adata.obsm["X_pca"], dtype=np.float32)
    n = adata.n_obs
    out["cells_after_qc"] = n
    out["knn_method"] = auto_method(n, args.ann_threshold)
    # the graph stage's own code path; the kNN call is wrapped only to keep its neighbour
    # indices (for recall) and to give it the benchmark's threads
    captured = {}

    def knn_with_threads(points, k, **kw):
        kw["n_jobs"], kw["ann_threshold"] = args.threads, args.ann_threshold
        idx, dist = knn_search(points, k, **kw)
        captured["idx"] = idx
        return idx, dist

    cellgnn.graph.knn_search = knn_with_threads
    # numba compiles scanpy's (pynndescent) and our NN-descent kernels once per process: compile
    # both before timing either graph (warm times; bench/knn_cold.py times the cold start)
    _scanpy_scipy_shim()
    _warm_up_pynndescent(args.seed)
    warm = np.random.default_rng(args.seed).normal(size=(5000, pca.shape[1])).astype(np.float32)
    knn_search(warm, args.k, method="nndescent", seed=args.seed, n_jobs=args.threads)
    ei, ew = stage("graph", lambda: knn_graph(pca, args.k, "euclidean", True, "auto", args.seed))
    out["edges"] = int(ei.shape[1])

    # same PCA, scanpy defaults (n_neighbors=15 counting the cell itself, umap connectivities)
    sadata = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names))
    sadata.obsm["X_pca"] = pca
    stage("scanpy_neighbors", lambda: sc.pp.neighbors(sadata, use_rep="X_pca", random_state=args.seed))

    # recall against exact kNN on sampled cells
    rng = np.random.default_rng(args.seed)
    q = np.sort(rng.choice(n, size=min(args.recall_sample, n), replace=False))
    exact = exact_neighbors_of(pca, q, args.k, n_jobs=args.threads)
    ours = captured["idx"][q]
    dist = sadata.obsp["distances"].tocsr()
    theirs_rows = []
    for i in q:  # scanpy's non-self neighbours of cell i, nearest first
        cols, d = dist.indices[dist.indptr[i]:dist.indptr[i + 1]], dist.data[dist.indptr[i]:dist.indptr[i + 1]]
        keep = cols != i
        theirs_rows.append(cols[keep][np.argsort(d[keep], kind="stable")])
    k_sc = min(args.k, min(len(r) for r in theirs_rows))  # n_neighbors=15 counts the cell itself: 14
    theirs = np.vstack([r[:k_sc] for r in theirs_rows])
    out["recall_at_k_ours"] = round(recall_at_k(ours, exact, args.k), 4)
    out["recall_scanpy"] = round(recall_at_k(theirs, exact[:, :k_sc], k_sc), 4)
    out["scanpy_k"] = k_sc
    g, s = out["stages"]["graph"]["seconds"], out["stages"]["scanpy_neighbors"]["seconds"]
    out["graph_speedup_vs_scanpy"] = round(s / g, 3)
    print(f"[{n:>9,} cells] graph: ours {g:.1f} s vs scanpy.pp.neighbors {s:.1f} s -> time ratio scanpy/ours "
          f"{s / g:.2f} (>1: ours faster); "
          f"recall@{args.k} ours {out['recall_at_k_ours']:.4f}, scanpy recall@{k_sc} {out['recall_scanpy']:.4f} "
          f"({len(q)} sampled cells)", flush=True)
    del sadata, dist

    x = adata.X  # log-normalized genes, sparse CSR
    scale = 1.0 / np.maximum(x.max(axis=0).toarray().ravel(), 1e-12)  # min–max to [0, 1] (minimum is 0)
    classes = sorted(adata.obs["label"].unique())
    y = torch.from_numpy(pd.Categorical(adata.obs["label"], categories=classes).codes.astype(np.int64))
    train_mask = torch.from_numpy(rng.random(n) < 0.7)
    n_parts = max(1, n // args.part_size)
    parts = stage("partition", lambda: kmeans_partition(pca, n_parts, seed=args.seed, n_jobs=args.threads))
    eit = torch.from_numpy(ei)
    batches = ClusterBatches(eit, parts, args.parts_per_batch, seed=args.seed)
    model = build_model("gat", x.shape[1], len(classes))
    opt = torch.optim.Adagrad(model.parameters(), lr=1e-3, weight_decay=5e-4)
    loss = stage("train_epoch", lambda: train_epoch(model, x, y, train_mask, batches, opt,
                                                   torch.nn.CrossEntropyLoss(), scale=scale))
    out["train_loss"] = round(loss, 4)
    out["batches"] = len(batches)
    proba = stage("inference", lambda: predict(model, x, ClusterBatches(eit, parts, args.parts_per_batch,
                                                                        shuffle=False), len(classes), scale=scale))
    out["inference_cells"] = int(proba.shape[0])
    mem.stop()
    return out


def _scanpy_scipy_shim() -> None:
    """Let scanpy 1.11's ``pp.neighbors`` run with scipy >= 1.15.

    Its kNN transformers return ``csr_array``, which lost ``getnnz`` in recent scipy;
    scanpy then fails in ``_get_indices_distances_from_sparse_matrix``. Converting that
    one argument to ``csr_matrix`` (O(nnz), milliseconds) restores the released behaviour
    without changing the algorithm being timed.
    """
    import scanpy.neighbors as scn
    import scipy.sparse as sp

    orig = scn._get_indices_distances_from_sparse_matrix
    if getattr(orig, "_cellgnn_shim", False):
        return

    def shim(d, n_neighbors):
        return orig(sp.csr_matrix(d), n_neighbors)

    shim._cellgnn_shim = True
    scn._get_indices_distances_from_sparse_matrix = shim


def _warm_up_pynndescent(seed: int) -> None:
    """Compile pynndescent's numba kernels before timing scanpy (JIT time is not neighbour search)."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scanpy as sc

    w = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(5000)]))
    w.obsm["X_pca"] = np.random.default_rng(seed).normal(size=(5000, 50)).astype(np.float32)
    sc.pp.neighbors(w, use_rep="X_pca", random_state=seed)


def plot(results: list[dict], out_dir: Path) -> dict:
    """Log–log time and memory vs cells per stage; returns {stage: {time_slope, mem_slope}}."""
    import numpy as np

    from cellgnn.figstyle import colour, pyplot, save_figure

    plt = pyplot()
    stages = [s for s in results[0]["stages"] if s != "simulate"]
    cells = np.array([r["cells"] for r in results], dtype=float)
    slopes = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, s in enumerate(stages):
        t = np.array([r["stages"][s]["seconds"] for r in results])
        m = np.array([r["stages"][s]["peak_gib"] for r in results])
        st = float(np.polyfit(np.log10(cells), np.log10(np.maximum(t, 1e-3)), 1)[0]) if len(cells) > 1 else float("nan")
        sm = float(np.polyfit(np.log10(cells), np.log10(m), 1)[0]) if len(cells) > 1 else float("nan")
        slopes[s] = {"time_slope": round(st, 3), "mem_slope": round(sm, 3)}
        style = dict(color=colour(i), marker="os^vD<>p"[i % 8], ls="--" if s == "scanpy_neighbors" else "-")
        axes[0].loglog(cells, t, label=f"{s} (slope {st:.2f})", **style)
        axes[1].loglog(cells, m, label=f"{s} (slope {sm:.2f})", **style)
    axes[0].set(xlabel="cells", ylabel="wall time (s)", title="Time per stage")
    axes[1].set(xlabel="cells", ylabel="peak resident memory (GiB)", title="Peak memory per stage")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"cellgnn scale benchmark ({results[0]['genes']} genes, {results[0]['threads']} threads)")
    fig.tight_layout()
    save_figure(fig, out_dir / "scale")
    return slopes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ann-threshold", type=int, default=50_000)
    ap.add_argument("--recall-sample", type=int, default=2000)
    ap.add_argument("--part-size", type=int, default=500, help="cells per k-means partition")
    ap.add_argument("--parts-per-batch", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        res = run_one(args.one, args)
        (args.out / f"scale_{args.one}.json").write_text(json.dumps(res, indent=2))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "NUMBA_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads)}
    results = []
    for n in args.cells:
        cmd = [sys.executable, __file__, "--one", str(n), "--genes", str(args.genes), "--k", str(args.k),
               "--threads", str(args.threads), "--seed", str(args.seed), "--ann-threshold", str(args.ann_threshold),
               "--recall-sample", str(args.recall_sample), "--part-size", str(args.part_size),
               "--parts-per-batch", str(args.parts_per_batch), "--out", str(args.out)]
        rc = subprocess.call(cmd, env=env)
        f = args.out / f"scale_{n}.json"
        if rc != 0 or not f.exists():
            print(f"{n} cells: run failed (exit {rc}); stopping here", file=sys.stderr)
            break
        results.append(json.loads(f.read_text()))
    if not results:
        sys.exit(1)
    import pandas as pd

    rows = [{"cells": r["cells"], "stage": s, **v} for r in results for s, v in r["stages"].items()]
    pd.DataFrame(rows).to_csv(args.out / "scale.csv", index=False)
    slopes = plot(results, args.out) if len(results) > 1 else {}
    summary = {"runs": results, "loglog_slopes": slopes}
    (args.out / "scale.json").write_text(json.dumps(summary, indent=2))
    print("\nlog-log slope of time / peak memory vs cells (1 = linear):")
    for s, v in slopes.items():
        print(f"  {s:<16} time {v['time_slope']:5.2f}   memory {v['mem_slope']:5.2f}")
    for r in results:
        ratio = r["graph_speedup_vs_scanpy"]
        print(f"{r['cells']:>9,} cells: graph time ratio scanpy.pp.neighbors / ours {ratio:.2f}, "
              f"recall@{r.get('scanpy_k', 15)}: ours {r['recall_at_k_ours']:.4f} / scanpy {r['recall_scanpy']:.4f}")


if __name__ == "__main__":
    main()
