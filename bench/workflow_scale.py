"""Workflow scale benchmark: the real Snakemake workflow on simulated studies of 100k and 1M cells.

    python bench/workflow_scale.py --cells 100000 1000000 --cores 2

For each size, a simulated study (N cells × 2,000 genes of raw counts, CSR, ~150 non-zeros per
cell, 10 cell types, 3 condition labels, 8 donors; ``bench/scale.py``'s generator) is written as
an ``.h5ad`` and the workflow runs on it as a user would run a study file (``data.source: file``):
data → preprocess → graph (approximate kNN, sparse node features) → one graph model (GAT,
Cluster-GCN batches, exact chunked inference) → predictions → metrics, figures, summary and the
AnnData result ``cellgnn.h5ad``. The explain and augment stages are switched off
(``enabled: false``); everything else is the workflow's own default for such a config.

Each size runs in its own work folder ``bench/out/workflow_scale/<N>/`` (results, logs and
benchmarks there). Per rule it reads Snakemake's ``benchmark:`` file (wall seconds, peak RSS);
it prints the table, the whole run's wall time, the largest rule's peak memory, the log-log slope
of every rule's time and memory between the sizes, and writes ``bench/out/workflow_scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

GIB = 1024.0


def write_study(n: int, genes: int, path: Path, seed: int) -> float:
    """Simulated raw counts with label, donor and cell type in obs, written to ``path``; seconds."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    from scale import simulate_sparse

    t0 = time.perf_counter()
    X, cell_type, label = simulate_sparse(n, genes, seed=seed)
    donor = np.random.default_rng(seed + 1).integers(0, 8, n)
    obs = pd.DataFrame({"label": pd.Categorical([f"condition{c}" for c in label]),
                        "donor": pd.Categorical([f"donor{d}" for d in donor]),
                        "cell_type": pd.Categorical([f"type{t}" for t in cell_type])},
                       index=[f"cell{i:07d}" for i in range(n)])
    ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"GENE{j:04d}" for j in range(genes)])).write_h5ad(path)
    return time.perf_counter() - t0


def study_config(n: int, data: Path, args) -> dict:
    """The workflow config of one size: every key not set here has the schema's default."""
    return {
        "dataset": f"scale{n}",
        "seed": args.seed,
        "data": {"source": "file", "file": {"path": str(data)},
                 "keys": {"label": "label", "donor": "donor", "cell_type": "cell_type"}},
        "preprocess": {"min_genes": 50, "max_mito_fraction": 1.0, "n_pcs": 50},
        "celltype": {"enabled": False},
        "graph": {"split_modes": ["cells"], "k": 15, "knn_method": "auto", "sparse_features": "auto"},
        "train": {"models": ["gat"], "seeds": [args.seed], "max_epochs": args.epochs, "patience": args.patience,
                  "batching": "cluster", "num_parts": max(50, n // 1000), "parts_per_batch": 20},
        "explain": {"enabled": False},
        "augment": {"enabled": False},
    }


def run_size(n: int, args) -> dict:
    import yaml

    work = OUT / "workflow_scale" / str(n)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    data = work / "study.h5ad"
    simulate_s = write_study(n, args.genes, data, args.seed)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(study_config(n, data, args), sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(config), "--cores", str(args.cores), "--resources", f"gpu={args.cores}",
           "--printshellcmds"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    print(f"{n:,} cells: study written in {simulate_s:.0f} s; running {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"the workflow failed at {n:,} cells; see {work / 'snakemake.log'}")
    rules = {}
    for tsv in sorted((work / "benchmarks").rglob("*.tsv")):
        head, row = tsv.read_text().splitlines()[:2]
        rec = dict(zip(head.split("\t"), row.split("\t")))
        rule = str(tsv.relative_to(work / "benchmarks" / f"scale{n}").with_suffix(""))
        rules[rule] = {"seconds": float(rec["s"]), "max_rss_mib": float(rec["max_rss"])}
    return {"cells": n, "genes": args.genes, "wall_seconds": wall, "simulate_seconds": simulate_s, "rules": rules,
            "peak_rss_gib": max(r["max_rss_mib"] for r in rules.values()) / GIB}


def slope(a: float, b: float, na: int, nb: int) -> float:
    return math.log(b / a) / math.log(nb / na) if a > 0 and b > 0 else float("nan")


def size_table(r: dict) -> list[str]:
    lines = [f"### {r['cells']:,} cells × {r['genes']:,} genes: {r['wall_seconds'] / 60:.1f} min of Snakemake, "
             f"largest rule {r['peak_rss_gib']:.2f} GiB", "", "| rule | seconds | peak RSS (GiB) |", "|---|---|---|"]
    for rule, v in sorted(r["rules"].items(), key=lambda kv: -kv[1]["seconds"]):
        lines.append(f"| {rule} | {v['seconds']:.1f} | {v['max_rss_mib'] / GIB:.2f} |")
    return lines + [""]


def slope_table(a: dict, b: dict) -> list[str]:
    lines = [f"### Log-log slopes, {a['cells']:,} → {b['cells']:,} cells (1 = linear)", "",
             "| rule | time slope | memory slope |", "|---|---|---|"]
    for rule in sorted(set(a["rules"]) & set(b["rules"])):
        ra, rb = a["rules"][rule], b["rules"][rule]
        lines.append(f"| {rule} | {slope(ra['seconds'], rb['seconds'], a['cells'], b['cells']):.2f} | "
                     f"{slope(ra['max_rss_mib'], rb['max_rss_mib'], a['cells'], b['cells']):.2f} |")
    lines.append(f"| whole run | {slope(a['wall_seconds'], b['wall_seconds'], a['cells'], b['cells']):.2f} | "
                 f"{slope(a['peak_rss_gib'], b['peak_rss_gib'], a['cells'], b['cells']):.2f} |")
    return lines + [""]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10, help="train.max_epochs of the GAT")
    p.add_argument("--patience", type=int, default=3, help="train.patience of the GAT")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    results, lines = [], []
    for n in sorted(args.cells):
        results.append(run_size(n, args))
        print("\n".join(size_table(results[-1])), flush=True)
        lines += size_table(results[-1])
    for a, b in zip(results, results[1:]):
        print("\n".join(slope_table(a, b)))
        lines += slope_table(a, b)
    (OUT / "workflow_scale.json").write_text(json.dumps(results, indent=1))
    (OUT / "workflow_scale.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
