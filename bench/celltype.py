"""Benchmark: the N-ACT-style cell-typing stage against known cell types.

Runs ``cellgnn.celltype.run_celltype`` (Harmony over label + donor, Leiden, the scANNA-style
attention classifier, salient genes) with the config's defaults and seeds ``--seeds`` on

- the default data (config/config.yaml, simulated: 6 epithelial cell types, 25 marker genes
  each): ARI / NMI against the simulator's cell types, and how many of each cluster's top-10
  salient genes are the planted markers of its majority type;
- Kang 2018, full file (``preprocess`` with the config's defaults: all genes; the classifier
  reads the 2,000 most variable): ARI / NMI against the authors' 8 cell types, and whether
  each cluster's top-10 salient genes hold a canonical marker (``config/markers/pbmc.tsv``, the
  Seurat PBMC 3k tutorial's: IL7R/CCR7/CD3E, CD14/LYZ, MS4A1, NKG7/GNLY, PPBP, FCGR3A/MS4A7,
  FCER1A/CST3, CD8A) of its majority author type, per type; the named cell types (clusters of
  one name merged) against the authors' types. The same check on a Wilcoxon ranking of the clusters (each against
  the rest, on the classifier's genes) is the reference.

Clustering alone (no classifier) is also scored at other Leiden resolutions and without
Harmony (seed 0).

    python bench/celltype.py                    # seeds 0 1 2
    python bench/celltype.py --skip-default --seeds 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cellgnn import celltype as ct  # noqa: E402
from cellgnn.config import validate_config  # noqa: E402
from cellgnn.stats import t_interval as mean_ci  # noqa: E402

KANG = ROOT.parent / "shared" / "data" / "kang2018" / "kang2018_pbmc_ifnb.h5ad"
MARKERS = ROOT / "config" / "markers" / "pbmc.tsv"
N_MARKERS, MARKER_START = 25, 13  # cellgnn.data.simulate: 25 marker genes per type after the 13 MT- genes


def ci(values) -> str:
    m, lo, hi = mean_ci(values)
    return f"{m:.3f}" if not np.isfinite(lo) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def clustering_only(adata, p: dict, seed: int, resolution: float, integrate: list[str]) -> tuple[int, float]:
    from sklearn.metrics import adjusted_rand_score

    emb = ct.embedding(adata, min(p["n_pcs"], adata.obsm["X_pca"].shape[1]), integrate, seed)
    cl = ct.leiden_clusters(emb, p["n_neighbors"], resolution, seed, p["min_cluster_size"])
    return int(cl.max()) + 1, float(adjusted_rand_score(adata.obs["cell_type"].astype(str), cl))


def de_marker_hits(adata, res: ct.CelltypeResult, markers: pd.DataFrame, top_k: int) -> dict:
    """Marker hits of a Wilcoxon ranking (cluster vs rest) on the classifier's genes, same clusters."""
    from cellgnn.explain import de_scores

    a = res.assignments
    idx = [adata.var_names.get_loc(g) for g in res.genes]
    X = adata.X[:, idx]
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    k = a["cluster"].to_numpy()
    classes = [str(c) for c in range(k.max() + 1)]
    scores = de_scores(X, k, classes, res.genes)
    table = ct.salience_table(np.stack([scores[c] for c in classes]), res.genes, classes, top_k)
    majority = {c: v["majority"] for c, v in res.metrics["known_cell_types"]["clusters"].items()}
    return ct.marker_hits(table, markers, majority, top_k)


def report(name: str, runs: list[dict], hits_key: str = "marker_hits_known_types") -> None:
    print(f"\n### {name}: seeds {' '.join(str(r['seed']) for r in runs)}\n")
    print(f"ARI {ci([r['metrics']['known_cell_types']['ari'] for r in runs])}, "
          f"NMI {ci([r['metrics']['known_cell_types']['nmi'] for r in runs])}, "
          f"clusters {[r['metrics']['n_clusters'] for r in runs]}, classifier held-out accuracy "
          f"{ci([r['metrics']['classifier']['val_accuracy'] for r in runs])}, seconds {[round(r['seconds']) for r in runs]}")
    if "named_types" in runs[0]["metrics"]:
        nt = [r["metrics"]["named_types"] for r in runs]
        print(f"named cell types (clusters of one name merged): ARI {ci([n['ari'] for n in nt])}, NMI "
              f"{ci([n['nmi'] for n in nt])}, names {[n['n_names'] for n in nt]}, cells named as their known type "
              f"{ci([n['accuracy'] for n in nt])}")
        print("  per known type, cells named right: " + "; ".join(
            f"{t} {ci([n['accuracy_by_type'][t] for n in nt])}" for t in nt[0]["accuracy_by_type"]))
    if hits_key in runs[0]["metrics"]:
        print(f"types whose matched cluster has a marker in its top 10: attention "
              f"{[r['metrics'][hits_key]['n_types_hit'] for r in runs]}"
              + (f", Wilcoxon DE {[r['de']['n_types_hit'] for r in runs]}" if "de" in runs[0] else "")
              + f" of {runs[0]['metrics']['known_cell_types']['n_known_types']} known types")
        print("\n| type | attention: seeds with a hit | DE: seeds with a hit |\n|---|---|---|")
        for t in runs[0]["all_types"]:
            a = sum(bool(r["metrics"][hits_key]["by_type"].get(t)) for r in runs)
            d = sum(bool(r["de"]["by_type"].get(t)) for r in runs) if "de" in runs[0] else "-"
            matched = sum(t in r["metrics"][hits_key]["by_type"] for r in runs)
            print(f"| {t} | {a} of {len(runs)} (a matching cluster in {matched}) | {d} |")
    r0 = runs[0]
    print(f"\nseed {r0['seed']} clusters (majority known type, purity, cells; name; top-10 salient genes):")
    for k, info in r0["metrics"]["known_cell_types"]["clusters"].items():
        top = r0["top10"].get(k, [])
        print(f"  {k}: {info['majority']} {info['purity']:.2f} {info['n_cells']}; {r0['metrics']['names'][k]}; "
              f"{' '.join(top)}")


def run(adata, p: dict, seed: int, markers, with_de: bool) -> dict:
    t0 = time.perf_counter()
    res = ct.run_celltype(adata, {**p, "seed": seed}, markers=markers)
    m = res.metrics
    out = {"seed": seed, "metrics": m, "seconds": time.perf_counter() - t0,
           "all_types": sorted(adata.obs["cell_type"].astype(str).unique()),
           "top10": res.salient[res.salient["rank"] <= 10].groupby("cluster")["gene"].apply(list).to_dict()}
    if with_de and markers is not None:
        out["de"] = de_marker_hits(adata, res, markers, int(p["marker_top_k"]))
    print(f"  seed {seed}: ARI {m['known_cell_types']['ari']:.3f}, {m['n_clusters']} clusters "
          f"({out['seconds']:.0f} s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--resolution", type=float, help="Leiden resolution of the stage (default: the config's)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other celltype settings (YAML values)")
    ap.add_argument("--resolutions", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5, 1.0],
                    help="resolutions of the clustering-only comparison")
    ap.add_argument("--skip-default", action="store_true")
    ap.add_argument("--skip-kang", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from cellgnn.data import load_dataset, standardize_obs
    from cellgnn.preprocess import preprocess

    cfg = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    p = ct.resolve_params(cfg["celltype"])
    if args.resolution is not None:
        p["resolution"] = args.resolution
    p.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)})
    print("celltype defaults:", {k: v for k, v in p.items() if k != "markers"})
    datasets = []
    if not args.skip_default:
        raw = load_dataset(cfg["data"])
        types = list(raw.obs["cell_type"].cat.categories)
        sim_markers = pd.DataFrame([(t, raw.var_names[MARKER_START + N_MARKERS * c + i]) for c, t in enumerate(types)
                                    for i in range(N_MARKERS)], columns=["cell_type", "gene"])
        datasets.append(("default data (simulated)", preprocess(raw, cfg["preprocess"], seed=cfg["seed"])[0],
                         sim_markers, False))
    if not args.skip_kang:
        import anndata as ad

        raw = standardize_obs(ad.read_h5ad(KANG), {"label": "condition", "donor": "donor", "cell_type": "cell_type"},
                              where=str(KANG))
        datasets.append((f"Kang 2018 full ({KANG.name})", preprocess(raw, cfg["preprocess"], seed=cfg["seed"])[0],
                         ct.read_markers(MARKERS), True))
    for name, adata, markers, with_de in datasets:
        print(f"\n{name}: {adata.n_obs} cells x {adata.n_vars} genes", flush=True)
        runs = [run(adata, p, s, markers, with_de) for s in args.seeds]
        if not with_de:  # simulated: count the planted markers among each cluster's top 10
            for r in runs:
                hits = r["metrics"]["marker_hits_known_types"]["by_cluster"]
                r["planted_in_top10"] = [len(h["hits"]) for h in hits.values()]
            print("planted markers of the majority type among each cluster's top 10:",
                  [r["planted_in_top10"] for r in runs])
        report(name, runs)
        print("\nclustering only, seed 0 (ARI; clusters):")
        for integrate in (p["integrate"], []):
            row = [clustering_only(adata, p, 0, res, integrate) for res in args.resolutions]
            print(f"  integrate {integrate or 'none'}: " + ", ".join(f"resolution {r}: {a:.3f} ({n})" for r, (n, a) in
                                                                      zip(args.resolutions, row)), flush=True)


if __name__ == "__main__":
    main()
