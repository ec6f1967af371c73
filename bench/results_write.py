"""Size and write time of the results file (``cellgnn.h5ad``, rule results) at scale.

    python bench/results_write.py --cells 100000 1000000 --threads 2

Each size runs in its own process. The inputs are simulated as rule results would read them for a
default-config run at that size: counts of ``bench/scale.py`` (N cells x 2,000 genes, ~150
non-zeros per cell, 10 cell types, 3 labels) preprocessed by ``cellgnn.preprocess.preprocess``
(log1p, 50 PCs), 8 donors x 2 samples, ``donor_cv`` with 8 folds, 7 models x 3 seeds of held-out
predictions (Dirichlet probabilities), ``calls.csv``-style sample calls, a random 2-D "UMAP" and an
``explain/genes.csv``-sized ranking table (7 methods x 3 classes x 11 groups x 50 genes). Stages, each
timed with its peak resident memory: ``annotate`` (:func:`cellgnn.results.add_predictions`,
``add_calls``, ``add_attributions``, ``add_tables``), ``neighbors`` (:func:`cellgnn.neighbors.neighbors`,
k=12, 50 PCs, ``knn_method: auto``), then the write with cellgnn's setting (gzip,
:func:`cellgnn.results.write_results`) and, in the same process for comparison, with lzf and without
compression, and reading the gzip file back. Prints file sizes and the time ratios against the
uncompressed write. Writes ``bench/out/results_write.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

MODELS = ("logreg", "logreg_cv", "mlp", "gcn", "gat", "gat_ef", "scanna")
METHODS = ("integrated_gradients", "weights", "attention", "gnnexplainer", "de", "de_control", "random")


def simulate_inputs(n: int, seed: int = 0, n_folds: int = 8, n_seeds: int = 3, top_k: int = 50):
    """The preprocessed AnnData and what rule results reads for it (see the module doc)."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from cellgnn.preprocess import preprocess
    from scale import simulate_sparse

    rng = np.random.default_rng(seed)
    X, cell_type, label = simulate_sparse(n, seed=seed)
    classes = ["ctrl", "mild", "severe"]
    donor = rng.integers(0, 8, n)
    obs = pd.DataFrame({"label": pd.Categorical(np.asarray(classes)[label]),
                        "donor": pd.Categorical([f"d{d}" for d in donor]),
                        "cell_type": pd.Categorical([f"type{t}" for t in cell_type]),
                        "sample": pd.Categorical([f"d{d}_{c}" for d, c in zip(donor, np.asarray(classes)[label])])},
                       index=pd.Index([f"cell{i:07d}" for i in range(n)]))
    raw = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"gene{g:04d}" for g in range(X.shape[1])]))
    adata, _ = preprocess(raw, {"expect_counts": True, "min_genes": 1, "min_cells": 1, "max_mito_fraction": 1.0,
                                "target_sum": 1e4, "transform": "log1p", "hvg": None, "n_pcs": 50}, seed=seed)
    names = adata.obs_names.to_numpy()
    fold = adata.obs["donor"].cat.codes.to_numpy() % n_folds
    tables = {}
    for model in MODELS:
        tables[model] = {}
        for s in range(n_seeds):
            p = rng.dirichlet(np.ones(len(classes)), size=adata.n_obs).astype(np.float64)
            df = pd.DataFrame({"cell_id": names, "split": "test", "unit": [f"donor_cv/fold{f}" for f in fold]})
            for i, c in enumerate(classes):
                df[f"p_{c}"] = p[:, i]
            tables[model][s] = df
    samples = adata.obs["sample"].cat.categories
    calls = pd.DataFrame([{"model": m, "split": "donor_cv", "seed": s, "unit_kind": "sample", "unit": u,
                           **{f"mean_logp_{c}": float(v) for c, v in zip(classes, np.log(rng.dirichlet(np.ones(3))))}}
                          for m in MODELS for s in range(n_seeds) for u in samples])
    groups = ["all"] + [f"type{t}" for t in range(10)]
    genes = pd.DataFrame([{"method": m, "class": c, "cell_type": g, "gene": str(gene), "score": float(sc), "rank": r + 1}
                          for m in METHODS for c in classes for g in groups
                          for r, (gene, sc) in enumerate(zip(rng.choice(adata.var_names, top_k, replace=False),
                                                             np.sort(rng.random(top_k))[::-1]))])
    summary = pd.DataFrame({"model": list(MODELS), "split": "donor_cv", "macro_f1_mean": rng.random(len(MODELS))})
    umap = rng.normal(size=(adata.n_obs, 2)).astype(np.float32)
    return adata, tables, calls, genes, summary, umap


def run_one(n: int, threads: int, seed: int) -> dict:
    from cellgnn.neighbors import neighbors
    from cellgnn.results import add_attributions, add_calls, add_predictions, add_tables, write_results
    from scale import PeakRSS, timed_stage

    mem = PeakRSS()
    out = {"cells": n, "threads": threads, "seed": seed, "stages": {}}

    def stage(name, fn):
        return timed_stage(out, mem, n, name, fn)

    adata, tables, calls, genes, summary, umap = stage("simulate", lambda: simulate_inputs(n, seed))
    best = str(summary.set_index("model")["macro_f1_mean"].idxmax())

    def annotate():
        adata.obsm["X_umap"] = umap
        add_predictions(adata, tables, best, "donor_cv")
        add_calls(adata, calls, best, "donor_cv")
        add_attributions(adata, genes)
        add_tables(adata, {"models_summary": summary, "calls": calls})
        add_tables(adata, {"genes": genes}, under="explain")

    stage("annotate", annotate)
    stage("neighbors", lambda: neighbors(adata, k=12, n_pcs=50, method="auto", seed=seed, n_jobs=threads))
    with tempfile.TemporaryDirectory(prefix="cellgnn-bench-") as tmp:
        gz = Path(tmp) / "cellgnn.h5ad"
        stage("write_gzip", lambda: write_results(adata, gz))
        out["size_mb"] = {"gzip": round(gz.stat().st_size / 1e6, 1)}
        for comp in ("lzf", None):
            f = Path(tmp) / f"cellgnn_{comp}.h5ad"
            stage(f"write_{comp or 'none'}", lambda f=f, comp=comp: adata.write_h5ad(f, compression=comp))
            out["size_mb"][comp or "none"] = round(f.stat().st_size / 1e6, 1)
            f.unlink()
        import anndata as ad

        stage("read_gzip", lambda: ad.read_h5ad(gz))
    mem.stop()
    none = out["stages"]["write_none"]["seconds"]
    out["ratio_to_uncompressed"] = {k: round(out["stages"][f"write_{k}"]["seconds"] / none, 2) for k in ("gzip", "lzf")}
    print(f"[{n:>9,} cells] size MB {out['size_mb']}; write time / uncompressed write {out['ratio_to_uncompressed']}",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, nargs="+", default=[100_000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.threads, args.seed)), flush=True)
        return
    results = []
    for n in args.cells:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--threads", str(args.threads),
                               "--seed", str(args.seed)], capture_output=True, text=True)
        sys.stdout.write("".join(line + "\n" for line in proc.stdout.splitlines() if not line.startswith("RESULT ")))
        if proc.returncode != 0:
            print(f"[{n:>9,} cells] failed:\n{proc.stderr[-3000:]}", flush=True)
            continue
        results += [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results_write.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
