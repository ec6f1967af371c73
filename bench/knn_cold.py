"""kNN graph from a cold start: cellgnn's NN-descent graph vs ``scanpy.pp.neighbors``, in one run.

A user's first run pays numba's compilation, so each side runs in its own fresh Python
process with an empty numba cache (``NUMBA_CACHE_DIR`` set to a new folder): the timed
call includes every kernel compiled on the way (pynndescent's for scanpy, ``cellgnn.nndescent``'s
for ours); ``scanpy`` and ``numba`` are imported before the timer on both sides. Each worker
then repeats the call (warm: kernels compiled). Same points for both: ``N`` PCA-like
points in 50 dims (20 clusters, variance decaying over the components), float32.

Ours: ``cellgnn.graph.knn_graph(points, k, method="nndescent")`` (kNN + fuzzy weights).
scanpy: ``sc.pp.neighbors(adata, n_neighbors=k + 1, use_rep="X_pca")`` (its n_neighbors
counts the cell itself; defaults otherwise: pynndescent + umap connectivities).
Recall@k of both against exact kNN on ``--sample`` random cells.

    PYTHONPATH=src .venv/bin/python bench/knn_cold.py --cells 200000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def pca_like(n: int, dim: int = 50, n_clusters: int = 20, seed: int = 0) -> np.ndarray:
    """float32 ``[n, dim]``: cluster centres plus noise, both scaled by 1/sqrt(component)."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32) * 4 * scale
    x = centres[rng.integers(0, n_clusters, n)]
    x += rng.standard_normal((n, dim), dtype=np.float32) * scale
    return x


def worker(side: str, points: Path, out: Path, k: int, threads: int, seed: int, queries: Path) -> None:
    """One side, in this (fresh) process: cold call, warm call, neighbours of the query cells."""
    import numba  # noqa: F401  (imported before the timer on both sides)
    import scanpy as sc

    x = np.load(points)
    q = np.load(queries)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        if side == "ours":
            from cellgnn.graph import knn_graph

            ei, _ = knn_graph(x, k, "euclidean", False, "nndescent", seed, threads)
        else:
            import anndata as ad
            import pandas as pd

            sys.path.insert(0, str(HERE))
            from scale import _scanpy_scipy_shim

            _scanpy_scipy_shim()
            a = ad.AnnData(obs=pd.DataFrame(index=np.arange(x.shape[0]).astype(str)))
            a.obsm["X_pca"] = x
            sc.pp.neighbors(a, n_neighbors=k + 1, use_rep="X_pca", random_state=seed)
        times.append(time.perf_counter() - t0)
    if side == "ours":
        # knn_graph's edges are the symmetrized graph; recall is measured on the kNN lists themselves
        from cellgnn.knn import knn_search

        nbrs = knn_search(x, k, method="nndescent", seed=seed, n_jobs=threads)[0][q]
    else:
        d = a.obsp["distances"].tocsr()
        nbrs = np.full((q.size, k), -1, dtype=np.int64)
        for r, i in enumerate(q):  # its non-self neighbours of cell i, nearest first
            lo, hi = d.indptr[i], d.indptr[i + 1]
            cols = d.indices[lo:hi][np.argsort(d.data[lo:hi], kind="stable")]
            cols = cols[cols != i][:k]
            nbrs[r, :cols.size] = cols
    np.save(out, nbrs)
    out.with_suffix(".json").write_text(json.dumps({"cold_s": times[0], "warm_s": times[1]}))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample", type=int, default=2000, help="cells whose exact neighbours give recall")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", choices=["ours", "scanpy"], help=argparse.SUPPRESS)
    ap.add_argument("--points", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--queries", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.points, args.out, args.k, args.threads, args.seed, args.queries)
        return {}

    from cellgnn.knn import exact_neighbors_of, recall_at_k

    x = pca_like(args.cells, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    q = np.sort(rng.choice(args.cells, size=min(args.sample, args.cells), replace=False))
    exact = exact_neighbors_of(x, q, args.k, n_jobs=args.threads)
    res: dict = {"cells": args.cells, "k": args.k, "threads": args.threads, "sample": int(q.size)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "x.npy", x)
        np.save(tmp / "q.npy", q)
        for side in ("scanpy", "ours"):
            env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / f"numba_{side}"), NUMBA_NUM_THREADS=str(args.threads),
                       OMP_NUM_THREADS=str(args.threads))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--worker", side, "--points", str(tmp / "x.npy"),
                            "--queries", str(tmp / "q.npy"), "--out", str(tmp / f"{side}.npy"),
                            "--k", str(args.k), "--threads", str(args.threads), "--seed", str(args.seed)],
                           env=env, check=True)
            r = json.loads((tmp / f"{side}.json").read_text())
            r["process_s"] = time.perf_counter() - t0
            r["recall"] = recall_at_k(np.load(tmp / f"{side}.npy"), exact, args.k)
            res[side] = r
    res["cold_ratio_scanpy_over_ours"] = res["scanpy"]["cold_s"] / res["ours"]["cold_s"]
    res["warm_ratio_scanpy_over_ours"] = res["scanpy"]["warm_s"] / res["ours"]["warm_s"]
    for side in ("scanpy", "ours"):
        r = res[side]
        print(f"{side:>6}: cold {r['cold_s']:7.1f} s  warm {r['warm_s']:7.1f} s  recall@{args.k} {r['recall']:.4f}")
    print(f"{args.cells:,} cells, {args.threads} threads: scanpy/ours cold {res['cold_ratio_scanpy_over_ours']:.2f}x, "
          f"warm {res['warm_ratio_scanpy_over_ours']:.2f}x")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
