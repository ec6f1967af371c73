"""Benchmark: the scANNA-style attention classifier against logistic regression, and its
attention against integrated gradients, on the default data and on Kang 2018.

Everything goes through the library as the workflow does: ``cellgnn.data.simulate`` (via
``load_dataset``) / ``preprocess`` / ``graph.build_graph`` / ``train.train_model``, and the
explain stage's ``run_explain`` for the gene rankings (attention read-out, integrated
gradients through the same scANNA model, Wilcoxon DE against the control, random).

Default data (config/config.yaml): split units ``cells`` and ``donor_cv/fold<i>`` (the config's
``graph.cv_folds``; split seed 0, as the workflow), model seeds ``--seeds``. ``cells``: test
macro-F1 with 95% t-intervals over seeds and the paired difference scANNA − logistic regression.
``donor_cv``: every donor held out once, test cells pooled over the folds, 95% intervals from
resampling the held-out donors (``cellgnn.heldout.bootstrap_over_donors``, as models_summary.csv),
and the difference paired on the same resamples. Precision@k of the planted genes on the explain
stage's cells (500 stratified test cells shared by the folds, pooled as the explain stage does), per
class and per class × cell type; attention read-out variants and architecture ablations
(``--ablation``, on fold 0).

Kang 2018 (``--kang small|full``, label = obs condition, donor = obs donor, preprocess with
``hvg: 2000``): split mode ``donor_cv`` with ``--kang-folds`` folds (split seed 0; each donor
held out once with both conditions; validation from the training donors), model seeds
``--seeds``; held-out macro-F1 / AUROC pooled over folds with 95% intervals from resampling the
held-out donors, scANNA − logistic regression paired on the same resamples; and the number of
interferon-stimulated genes (MSigDB Hallmark IFN-alpha, bundled) among the top 20 genes of each
method for the class ``stim`` (every fold's explain cells pooled), overall and per cell type.

    python bench/scanna.py                           # default data + Kang small, seeds 0 1 2
    python bench/scanna.py --ablation --tune         # + context/projection ablations, lr x weight decay on val loss
    python bench/scanna.py --skip-default --kang full
    python bench/scanna.py --skip-kang --skip-cells --seeds 0   # default data, donor_cv only
    python bench/scanna.py --tune-only --skip-kang --tune-lr 0.003 0.01 --tune-wd 0.01 0.03 0.1
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cellgnn import explain as ex  # noqa: E402
from cellgnn.config import validate_config  # noqa: E402
from cellgnn.stats import t_interval as mean_ci  # noqa: E402
from cellgnn.models.scanna import salient_genes  # noqa: E402
from cellgnn.train import train_model  # noqa: E402

ISG_SET = "hallmark_interferon_alpha_response"  # bundled (cellgnn.genesets)
KANG = {"small": ROOT.parent / "shared" / "data" / "kang2018" / "kang2018_pbmc_ifnb_small.h5ad",
        "full": ROOT.parent / "shared" / "data" / "kang2018" / "kang2018_pbmc_ifnb.h5ad"}
EXPLAIN_METHODS = ["integrated_gradients", "attention", "de_control", "random"]


def read_gene_set(name: str) -> set[str]:
    """A bundled gene set's symbols and their previous HGNC symbols (Kang's annotation is hg19-era)."""
    from cellgnn.genesets import gene_set_path

    df = pd.read_csv(gene_set_path(name), sep="\t", comment="#")
    return set(df["gene"].dropna()) | set(df.get("previous_symbol", pd.Series(dtype=str)).dropna())


def ci(values) -> str:
    m, lo, hi = mean_ci(values)
    return f"{m:.3f}" if not np.isfinite(lo) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def prepare(cfg: dict, adata=None):
    """Preprocessed AnnData (simulated from ``cfg['data']`` unless ``adata`` is given)."""
    from cellgnn.data import load_dataset
    from cellgnn.preprocess import preprocess

    raw = load_dataset(cfg["data"]) if adata is None else adata
    return preprocess(raw, cfg["preprocess"], seed=cfg["seed"])[0]


def train(graph: dict, name: str, cfg: dict, seed: int, params: dict | None = None):
    tcfg = copy.deepcopy(cfg["train"])
    if params:
        tcfg["hyperparameters"] = {name: params}
    return train_model(graph, name, tcfg, seed)


def explain(graph: dict | list, models: dict | list, cfg: dict, truth, methods=EXPLAIN_METHODS,
            control="mock") -> dict:
    """The explain stage's tables for in-memory scANNA models (IG and attention on the same models).
    ``graph`` / ``models``: one split unit, or lists of them (donor_cv folds: pooled as the stage does)."""
    graphs, per_unit = (graph, models) if isinstance(graph, list) else ([graph], [models])
    params = {**cfg["explain"], "methods": methods, "de_control": control, "top_k": 50}
    units = []
    for u, (g, ms) in enumerate(zip(graphs, per_unit)):
        keys = {s: f"unit{u}/seed{s}" for s in ms}
        lookup = {f"unit{u}/seed{s}": m for s, m in ms.items()}
        units.append(ex.ExplainInputs(graph=g, graph_path=f"in memory {u}", truth=truth,
                                      models=keys if "integrated_gradients" in methods else {},
                                      load_model=lambda p, g, lookup=lookup: lookup[p], attention_models=keys))
    with tempfile.TemporaryDirectory() as d:
        ex.write_explanations(units, d, params)
        return {f: pd.read_csv(Path(d) / f"{f}.csv") for f in
                ("genes", "scores_summary", "ground_truth_scores", "ground_truth_scores_by_cell_type")
                if (Path(d) / f"{f}.csv").stat().st_size > 1}


def readout_variants(graph: dict, models: dict, cfg: dict, truth) -> pd.DataFrame:
    """precision@k of the planted class programmes for the attention read-outs, on the explain cells."""
    classes, genes = list(graph["classes"]), list(graph["genes"])
    y = graph["y"].numpy()
    cells = ex.select_cells(graph["test_mask"].numpy(), y, int(cfg["explain"]["n_cells"]),
                            np.random.default_rng(int(cfg["explain"]["seed"])))
    by_class, _ = ex.ground_truth_sets(truth, genes, classes)
    rows = []
    for seed, model in models.items():
        for name, ref in (("raw mean attention (scANNA)", None), ("minus the other classes", "rest"),
                          ("minus the control class (used)", classes.index("mock"))):
            s = salient_genes(model, graph["x"][cells], torch.as_tensor(y[cells]), reference=ref).numpy()
            p = np.mean([ex.precision_at_k(s[classes.index(c)], np.isin(genes, list(g))) for c, g in by_class.items()])
            rows.append({"readout": name, "seed": seed, "precision_at_k": p})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- default data

def bench_default(args, out: Path) -> None:
    from cellgnn.design import split_units
    from cellgnn.graph import build_graph

    cfg = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    t0 = time.perf_counter()
    adata = prepare(cfg)
    truth = {k: np.asarray(v) for k, v in adata.uns["ground_truth"].items()}
    n_donors = adata.obs["donor"].nunique()
    units = split_units(["donor_cv"] if args.skip_cells else ["cells", "donor_cv"], n_donors, cfg["graph"]["cv_folds"])
    graphs = {u: build_graph(adata, cfg["graph"], u, cfg["seed"]) for u in units}
    print(f"default data: {adata.n_obs} cells x {adata.n_vars} genes, {n_donors} donors, units {units} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if not args.tune_only:
        main_tables(args, out, cfg, graphs, truth)
    if args.tune or args.tune_only:
        tune(args, cfg, {u: graphs[u] for u in ("cells", "donor_cv/fold0") if u in graphs})


def held_out(graph: dict, proba: np.ndarray) -> pd.DataFrame:
    """Test cells of one unit as the train rule writes them (``cellgnn.train.predictions_table``)."""
    from cellgnn.train import predictions_table

    table = predictions_table(graph, proba)
    return table[table["split"] == "test"].reset_index(drop=True)


def donor_cv_table(preds: dict, classes: list[str], seeds: list[int]) -> list[str]:
    """Pooled donor_cv macro-F1 / AUROC of each model with 95% intervals from resampling the held-out
    donors (1,000 resamples, the same for both models), and scanna − logreg paired on those resamples."""
    from cellgnn.heldout import bootstrap_over_donors
    from cellgnn.stats import bootstrap_interval

    reps, point = {}, {}
    for name in ("logreg", "scanna"):
        reps[name], point[name] = bootstrap_over_donors({s: pd.concat(preds[(name, s)]) for s in seeds}, classes)
    lines = []
    for name in ("logreg", "scanna"):
        f = bootstrap_interval(point[name]["macro_f1"], reps[name]["macro_f1"])
        a = bootstrap_interval(point[name]["auroc"], reps[name]["auroc"])
        lines.append(f"| {name} | {f.mean:.3f} [{f.low:.3f}, {f.high:.3f}] | {a.mean:.3f} [{a.low:.3f}, {a.high:.3f}] |")
    d = bootstrap_interval(point["scanna"]["macro_f1"] - point["logreg"]["macro_f1"],
                           reps["scanna"]["macro_f1"] - reps["logreg"]["macro_f1"])
    lines.append(f"scanna - logreg macro-F1: {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] (donor resamples, paired)")
    return lines


def main_tables(args, out: Path, cfg: dict, graphs: dict, truth: dict) -> None:
    from cellgnn.metrics import classification_metrics

    rows, models, preds = [], {}, {}
    for unit, g in graphs.items():
        for name in ("logreg", "scanna"):
            fitted = {}
            for seed in args.seeds:
                # logistic regression ignores the seed: fitted once per unit, recorded under every seed
                r = fitted.get("once") if name == "logreg" else None
                r = r or train(g, name, cfg, seed)
                fitted["once"] = r
                rows.append({"data": "default", "unit": unit, "model": name, "seed": seed, **r.metrics,
                             "best_epoch": r.best_epoch, "seconds": r.seconds})
                if unit != "cells":
                    preds.setdefault((name, seed), []).append(held_out(g, r.proba))
                    if name == "scanna":
                        models.setdefault(unit, {})[seed] = r.model
                print(f"  {unit} {name} seed {seed}: test macro-F1 {r.metrics['macro_f1']:.3f} ({r.seconds:.0f} s)",
                      flush=True)
    acc = pd.DataFrame(rows)
    acc.to_csv(out / "default_models.csv", index=False)
    print("\n### Default data, test macro-F1 (model seeds %s; split seed %d)\n" % (" ".join(map(str, args.seeds)),
                                                                                cfg["seed"]))
    cells = acc[acc.unit == "cells"]
    if len(cells):
        print("cells split (mean [95% t-interval over seeds]):",
              {n: ci(cells[cells.model == n]["macro_f1"]) for n in ("logreg", "scanna")})
        pc = cells.pivot(index="seed", columns="model", values="macro_f1")
        print(f"scanna - logreg, cells: {ci(pc['scanna'] - pc['logreg'])} (paired by seed)")
    classes = list(next(iter(graphs.values()))["classes"])
    print("\ndonor_cv (%d folds, every donor held out once; pooled over the folds' test cells, mean over seeds):\n"
          % sum(u != "cells" for u in graphs))
    print("| model | macro-F1 | AUROC |\n|---|---|---|")
    for line in donor_cv_table(preds, classes, args.seeds):
        print(line)
    pooled = [{"model": n, "seed": s, **classification_metrics(
        pd.concat(preds[(n, s)])["true"].map({c: i for i, c in enumerate(classes)}).to_numpy(),
        pd.concat(preds[(n, s)])[[f"p_{c}" for c in classes]].to_numpy())} for n in ("logreg", "scanna") for s in args.seeds]
    pd.DataFrame(pooled).to_csv(out / "default_donor_cv_pooled.csv", index=False)

    cv_units = [u for u in graphs if u != "cells"]
    res = explain([graphs[u] for u in cv_units], [models[u] for u in cv_units], cfg, truth)
    summ = res["scores_summary"]
    summ.to_csv(out / "default_explain_summary.csv", index=False)
    print("\n### Planted genes, donor_cv, 500 test cells of the held-out donors pooled over the folds (precision@k, "
          "mean [95% CI] over scANNA seeds)\n")
    print("| method | precision@k | AUPRC |\n|---|---|---|")
    for _, r in summ.iterrows():
        print(f"| {r['method']} | {r['precision_at_k']:.3f} [{r['precision_at_k_low']:.3f}, "
              f"{r['precision_at_k_high']:.3f}] | {r['auprc']:.3f} |")
    sc = res["ground_truth_scores"]
    pc = sc.groupby(["method", "class"])["precision_at_k"].mean().unstack(0)
    print("\nper class (mean over seeds):\n")
    print(pc.round(3).to_markdown())
    m = ex.method_margins(sc, "attention", ["integrated_gradients", "de_control", "random"])
    print("\nattention minus other (paired by seed):", m.round(3).to_dict("records"))
    if "ground_truth_scores_by_cell_type" in res:
        bct = res["ground_truth_scores_by_cell_type"]
        per = bct.groupby(["method", "seed"], dropna=False)["precision_at_k"].mean().reset_index()
        print("\nper class x cell type (every gene planted there):",
              {mth: ci(g["precision_at_k"]) for mth, g in per.groupby("method")})
    rv = pd.concat([readout_variants(graphs[u], models[u], cfg, truth).assign(unit=u) for u in cv_units])
    rv = rv.groupby(["readout", "seed"], sort=False, as_index=False)["precision_at_k"].mean()
    rv.to_csv(out / "default_readouts.csv", index=False)
    print("\nattention read-out variants (same models and cells):",
          {k: ci(g["precision_at_k"]) for k, g in rv.groupby("readout", sort=False)})

    if args.ablation:
        u0 = cv_units[0]
        print(f"\n### Ablations, {u0} (test macro-F1; attention precision@k)\n")
        print("| variant | macro-F1 | attention precision@k |\n|---|---|---|")
        base_f1 = acc[(acc.model == "scanna") & (acc.unit == u0)]["macro_f1"]
        base_att = explain(graphs[u0], models[u0], cfg, truth, methods=["attention"])["ground_truth_scores"]
        base_att = base_att.groupby("seed")["precision_at_k"].mean()
        print(f"| used (diagonal attention, linear read-out) | {ci(base_f1)} | {ci(base_att)} |")
        for label, params in (("+ rank-64 whole-cell attention term", {"context_rank": 64}),
                              ("scANNA projection read-out (2 blocks)", {"n_blocks": 2}),
                              ("scANNA projection read-out (2 blocks), lr 1e-3", {"n_blocks": 2, "lr": 1e-3}),
                              ("no weight decay, no dropout", {"weight_decay": 0.0, "dropout": 0.0})):
            f1s, ms = [], {}
            for seed in args.seeds:
                r = train(graphs[u0], "scanna", cfg, seed, {"optimizer": "adam", "lr": 1e-2,
                                                                   "weight_decay": 1e-2, **params})
                f1s.append(r.metrics["macro_f1"])
                ms[seed] = r.model
            s = explain(graphs[u0], ms, cfg, truth, methods=["attention"])["ground_truth_scores"]
            print(f"| {label} | {ci(f1s)} | {ci(s.groupby('seed')['precision_at_k'].mean())} |", flush=True)


def tune(args, cfg: dict, graphs: dict) -> None:
    from cellgnn.metrics import classification_metrics

    print("\n### lr x weight decay, seed 0: best validation loss (macro-F1 on validation cells)\n")
    print("| split | lr | weight decay | val loss | val macro-F1 |\n|---|---|---|---|---|")
    for split, g in graphs.items():
        va = g["val_mask"].numpy()
        for lr in args.tune_lr:
            for wd in args.tune_wd:
                r = train(g, "scanna", cfg, 0, {"optimizer": "adam", "lr": lr, "weight_decay": wd})
                vl = min(h["val_loss"] for h in r.history)
                vf = classification_metrics(g["y"].numpy()[va], r.proba[va])["macro_f1"]
                print(f"| {split} | {lr:g} | {wd:g} | {vl:.3f} | {vf:.3f} |", flush=True)


# ----------------------------------------------------------------------------- Kang

def bench_kang(args, out: Path) -> None:
    import anndata as ad

    from cellgnn.data import standardize_obs
    from cellgnn.design import split_units
    from cellgnn.graph import build_graph

    cfg = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    cfg["preprocess"]["hvg"] = 2000
    cfg["graph"]["cv_folds"] = args.kang_folds
    path = KANG[args.kang]
    t0 = time.perf_counter()
    raw = standardize_obs(ad.read_h5ad(path), {"label": "condition", "donor": "donor", "cell_type": "cell_type"},
                          where=str(path))
    adata = prepare(cfg, raw)
    isg = read_gene_set(ISG_SET)
    units = split_units(["donor_cv"], adata.obs["donor"].nunique(), args.kang_folds)
    graphs = [build_graph(adata, cfg["graph"], u, cfg["seed"]) for u in units]
    print(f"\nKang 2018 ({path.name}): {adata.n_obs} cells x {adata.n_vars} genes (2,000 HVGs), "
          f"{len(isg & set(adata.var_names))} of {len(isg)} listed ISGs among them; donor_cv {units} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    rows, preds, models = [], {}, []
    for unit, g in zip(units, graphs):
        test_donors = sorted({g["donors"][d] for d in g["donor"][g["test_mask"]].tolist()})
        models.append({})
        for name in ("logreg", "scanna"):
            fitted = None
            for seed in args.seeds:
                r = fitted if name == "logreg" and fitted is not None else train(g, name, cfg, seed)
                fitted = r  # logistic regression ignores the seed: fitted once per fold
                rows.append({"data": f"kang_{args.kang}", "unit": unit, "test_donors": " ".join(test_donors),
                             "model": name, "seed": seed, **r.metrics, "seconds": r.seconds})
                preds.setdefault((name, seed), []).append(held_out(g, r.proba))
                if name == "scanna":
                    models[-1][seed] = r.model
                print(f"  {unit} (test donors {test_donors}) {name} seed {seed}: macro-F1 {r.metrics['macro_f1']:.3f} "
                      f"({r.seconds:.0f} s)", flush=True)
    pd.DataFrame(rows).to_csv(out / f"kang_{args.kang}_models.csv", index=False)
    print(f"\n### Kang ({path.name}), donor_cv ({len(units)} folds, every donor held out once with both "
          f"conditions), held-out cells pooled over folds; seeds {' '.join(map(str, args.seeds))}; 95% intervals "
          "from resampling held-out donors\n")
    print("| model | macro-F1 | AUROC |\n|---|---|---|")
    print("\n".join(donor_cv_table(preds, list(graphs[0]["classes"]), args.seeds)))
    res = explain(graphs, models, cfg, None, control="ctrl")
    genes = res["genes"]
    tops = []
    for (method, ctype), grp in genes[genes["class"] == "stim"].groupby(["method", "cell_type"]):
        top = grp.sort_values("rank")["gene"].head(20).tolist()  # scores averaged over the seeds
        tops.append({"method": method, "cell_type": ctype,
                     "isg_in_top20": sum(t in isg for t in top), "top20": " ".join(top)})
    top = pd.DataFrame(tops)
    top.to_csv(out / f"kang_{args.kang}_isg.csv", index=False)
    print("\n### ISGs (MSigDB Hallmark interferon-alpha response) among the top 20 genes for stim vs ctrl, "
          "explain cells of every fold pooled, "
          "scores averaged over seeds\n")
    allct = top[top.cell_type == "all"]
    print("| method | ISGs in top 20 |\n|---|---|")
    for method, n in allct.set_index("method")["isg_in_top20"].items():
        print(f"| {method} | {n} |")
    per = top[top.cell_type != "all"].groupby(["method", "cell_type"])["isg_in_top20"].mean().unstack(0)
    print("\nper cell type:\n")
    print(per.round(1).to_markdown())
    for method, genes20 in allct.groupby("method")["top20"].first().items():
        print(f"  {method}: {genes20}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--kang", choices=["small", "full"], default="small")
    ap.add_argument("--kang-folds", type=int, default=4, help="donor_cv folds on Kang (8 donors)")
    ap.add_argument("--skip-default", action="store_true")
    ap.add_argument("--skip-kang", action="store_true")
    ap.add_argument("--skip-cells", action="store_true", help="default data: donor_cv folds only")
    ap.add_argument("--ablation", action="store_true", help="architecture ablations on the donors split")
    ap.add_argument("--tune", action="store_true", help="lr x weight decay on validation loss")
    ap.add_argument("--tune-only", action="store_true", help="only the lr x weight decay table (default data)")
    ap.add_argument("--tune-lr", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--tune-wd", type=float, nargs="+", default=[0.0, 1e-3, 1e-2, 3e-2, 1e-1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "scanna"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not args.skip_default:
        bench_default(args, out)
    if not args.skip_kang:
        bench_kang(args, out)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
