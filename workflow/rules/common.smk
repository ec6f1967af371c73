# Helpers of the workflow: config validation and start-up checks, the run's plan (split
# units, models, optional stages), output lists and wildcard constraints.
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from cellgnn.config import EDGE_FEATURE_MODELS, resolve_run, validate_config  # noqa: E402
from cellgnn.errors import CellgnnInputError, failure_report  # noqa: E402
from cellgnn.preflight import preflight  # noqa: E402
from cellgnn.provenance import git_state  # noqa: E402

CONFIG_SOURCE = ", ".join(str(f) for f in workflow.configfiles) or "config"
try:
    validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml",
                    source=CONFIG_SOURCE)
    PLAN = preflight(config, ".", CONFIG_SOURCE)
    RUN = resolve_run(config, PLAN, CONFIG_SOURCE)
except CellgnnInputError as err:
    # refused before any job: the one line (file, field, fix) is all the user sees
    sys.stderr.write(f"cellgnn: {err}\n")
    sys.exit(1)

DATASET = config["dataset"]
GIT_STATE = git_state(workflow.basedir)  # recorded by rule provenance
MODELS = config["train"]["models"]
EDGE_MODELS = [m for m in MODELS if m in EDGE_FEATURE_MODELS]  # rule train_ef, after the edge features
NODE_MODELS = [m for m in MODELS if m not in EDGE_FEATURE_MODELS]  # rule train
SEEDS = config["train"]["seeds"]
# graph files: "cells", "donors", "donor_cv/fold<i>"; RUN["units"][mode] lists a mode's units
UNITS = PLAN.units
UNITS_OF = RUN["units"]
HELD_OUT_MODE = RUN["held_out_mode"]  # donor_cv, else donors, else cells: figures and ablation use it
HELD_OUT_UNITS = UNITS_OF[HELD_OUT_MODE]
EVAL = config["evaluation"]
RUN_EVALUATION = RUN["evaluation"]
ABLATION_GROUPS = RUN["ablation_groups"]
GAT_ACTIVA_UNITS = RUN["gat_activa_units"]  # model gat_activa (augment.smk): GAT on ACTIVA-topped-up graphs
AUGMENT_UNIT = RUN["augment_unit"]
EXPLAIN = {**config["explain"], **RUN["explain"]}
# Scheduling hints (rule priorities). Snakemake starts the set of ready jobs with the largest summed
# priority that fits the free cores, so a two-thread job outranks two one-thread jobs only above their
# sum. Every split's graph (two threads) comes first, as all trainings wait on them; after that every
# job of the default run uses one thread and two run side by side: the edge features, the trainings,
# and explain as soon as its models exist, with augment and the UMAP filling gaps.
PRIORITY = {"graph": 200, "explain": 70, "edge_features": 60, "train_ef": 50, "train": 45, "augment_topup": 40,
            "gat_activa": 40, "augment": 20, "umap_embedding": 20}


EXPLAIN_UNITS = UNITS_OF[RUN["explain"]["split"]]
# the preprocessed data the cell-type-aware rules read: with the celltype stage's calls in obs
# when they are this run's cell types (data.keys.cell_type null, celltype.enabled auto or true)
TYPED_ADATA = (
    "results/{dataset}/celltype/celltyped.h5ad"
    if RUN["cell_types_from"] == "celltype"
    else "results/{dataset}/preprocessed.h5ad"
)


wildcard_constraints:
    dataset=re.escape(DATASET),
    split="|".join(re.escape(u) for u in UNITS),
    model="|".join(MODELS),
    seed=r"\d+",
    group="|".join(config["edge_features"]["groups"]),


def run_files(model, units, name="metrics.json", dataset=DATASET):
    """``name`` of every seed of ``model`` on each of ``units``."""
    return expand("results/{dataset}/models/{split}/{model}/seed{seed}/{name}", dataset=dataset, split=units,
                  model=model, seed=SEEDS, name=name)


def seed_outputs(models, name):
    """``name`` of every seed of each of ``models`` (one name or a list), model-major, on one split unit."""
    return expand("results/{{dataset}}/models/{{split}}/{model}/seed{seed}/{name}", model=models, seed=SEEDS,
                  name=name)


def graph_inputs(wildcards):
    """The preprocessed data (TYPED_ADATA), plus the pretrain stage's embedding when the graph or the node features use it."""
    inputs = {"adata": TYPED_ADATA.format(dataset=wildcards.dataset)}
    if "pretrain" in (config["graph"]["features"], config["graph"]["node_features"]):
        inputs["pretrain"] = f"results/{wildcards.dataset}/pretrain/embedding.h5ad"
    return inputs


def ablation_runs(wildcards):
    """metrics.json of gat_ef retrained without each edge-feature group, on the held-out split (empty when off)."""
    return [f for g in ABLATION_GROUPS for f in run_files(f"gat_ef_minus_{g}", HELD_OUT_UNITS,
                                                           dataset=wildcards.dataset)]


def model_runs(wildcards, name="metrics.json"):
    """``name`` of every model x split unit x seed, and of gat_activa on its units."""
    runs = run_files(MODELS, UNITS, name, wildcards.dataset)
    return runs + run_files("gat_activa", GAT_ACTIVA_UNITS, name, wildcards.dataset)


def model_predictions(wildcards):
    return model_runs(wildcards, "predictions.csv")


EXPLAIN_FIGURES = ["explain_top_genes", "explain_methods", "explain_edge_features", "explain_cell_types"]


def figure_outputs():
    figures = ["umap", "confusion_matrix", "model_comparison", *(EXPLAIN_FIGURES if RUN["explain"]["run"] else [])]
    return expand("results/{dataset}/figures/{fig}.{ext}", dataset=DATASET, fig=figures, ext=["png", "pdf"])


def get_final_output():
    evaluation = (
        [
            f"results/{DATASET}/metrics/comparison.csv",
            f"results/{DATASET}/metrics/ablation.csv",
            f"results/{DATASET}/figures/edge_feature_evaluation.png",
        ]
        if RUN_EVALUATION
        else []
    )
    augment = [f"results/{DATASET}/augment/metrics.json"] if RUN["augment"] else []
    celltype = [f"results/{DATASET}/celltype/metrics.json"] if RUN["celltype"] else []
    return [
        f"results/{DATASET}/metrics/models.csv",
        f"results/{DATASET}/summary.md",
        *figure_outputs(),
        *evaluation,
        *augment,
        *celltype,
        f"results/{DATASET}/provenance/config.yaml",
        f"results/{DATASET}/provenance/provenance.json",
        f"results/{DATASET}/cellgnn.h5ad",
    ]


def held_out_predictions(wildcards):
    """predictions.csv of every model and seed on the held-out split's units (each cell tested once on
    donor_cv); the plotting code picks the best model from metrics/models.csv."""
    return run_files(MODELS, HELD_OUT_UNITS, "predictions.csv", wildcards.dataset)


def active_outputs():
    """workflow_outputs() of the stages this config runs (rules are defined in every run;
    the optional ones are switched off by the run's plan)."""
    skip = set()
    if not RUN_EVALUATION:
        skip.add("evaluate")
    if not RUN["explain"]["run"]:
        skip |= {"explain", "explain_figures"}
    if not RUN["augment"]:
        skip.add("augment")
    if not RUN["celltype"]:
        skip.add("celltype")
    return workflow_outputs(skip=skip)


def workflow_outputs(skip=()):
    """Every output path of this workflow's rules with {dataset} filled in and no other
    wildcard left (used to find optional stages: explain, augment, edge-feature ablation)."""
    out = set()
    for r in workflow.rules:
        if r.name in skip:
            continue
        for f in r.output:
            path = re.sub(r"\{dataset(,[^}]*)?\}", DATASET, str(f))
            if "{" not in path:
                out.add(path)
    return out


# ---- explain stage, summary and paper target
def _explain_models(model, wildcards):
    return run_files(model, EXPLAIN_UNITS, "model.pt", wildcards.dataset)


def explain_inputs(wildcards):
    """Graphs and checkpoints of every explained unit (each fold explains its held-out cells), truth,
    and the edge features and attention model only when they are part of this run."""
    methods = EXPLAIN["methods"]
    inputs = {
        "graphs": expand("results/{dataset}/graph/{split}.pt", dataset=wildcards.dataset, split=EXPLAIN_UNITS),
        "raw": f"results/{wildcards.dataset}/raw.h5ad",
        "models": _explain_models(EXPLAIN["model"], wildcards),
    }
    if "attention" in methods and EXPLAIN["attention_model"] in MODELS:
        inputs["attention"] = _explain_models(EXPLAIN["attention_model"], wildcards)
    if EXPLAIN["edge_model"] in MODELS:
        inputs["edge_models"] = _explain_models(EXPLAIN["edge_model"], wildcards)
    if EXPLAIN["model"] in EDGE_FEATURE_MODELS or "edge_models" in inputs:
        inputs["edge_features"] = expand("results/{dataset}/edge_features/{split}.pt", dataset=wildcards.dataset,
                                         split=EXPLAIN_UNITS)
    ablation = ablation_table(wildcards)
    if ablation:
        inputs["ablation"] = ablation
    return inputs


def ablation_table(wildcards):
    """The edge-feature ablation table the explain stage reads, or "" when no group is ablated (then the
    explain stage need not wait for every model and the evaluation)."""
    return f"results/{wildcards.dataset}/metrics/ablation.csv" if ABLATION_GROUPS else ""


def summary_inputs(wildcards):
    """Model tables and QC, plus the explain and augment stages' tables when this workflow has them."""
    inputs = {
        "models": f"results/{wildcards.dataset}/metrics/models.csv",
        "summary": f"results/{wildcards.dataset}/metrics/models_summary.csv",
        "calls": f"results/{wildcards.dataset}/metrics/calls.csv",
        "margins": f"results/{wildcards.dataset}/metrics/margins.csv",
        "cell_types": f"results/{wildcards.dataset}/metrics/cell_types.csv",
        "qc": f"results/{wildcards.dataset}/qc.json",
        "raw": f"results/{wildcards.dataset}/raw.h5ad",
    }
    produced = active_outputs()
    explain_run = f"results/{wildcards.dataset}/explain/run.json"
    if explain_run in produced:
        inputs["explain"] = explain_run
    inputs["augment"] = sorted(
        p
        for p in produced
        if p.startswith(f"results/{wildcards.dataset}/augment/") and p.endswith((".json", ".csv"))
    )
    return inputs


def paper_figures(wildcards):
    """Every PNG/PDF under results/<dataset>/figures/ that some rule writes, plus summary.md."""
    figures = [
        p
        for p in active_outputs()
        if Path(p).parent.name == "figures" and Path(p).suffix in {".png", ".pdf"}
    ]
    return sorted(figures) + [f"results/{DATASET}/summary.md"]


# ---- results file (rule results)
def results_inputs(wildcards):
    """The preprocessed cells, the figures' UMAP, every held-out run of every model (gat_activa too
    where it ran on the held-out split), the metrics tables, provenance and, when they run, the
    explanations."""
    d = f"results/{wildcards.dataset}"
    models = MODELS + (["gat_activa"] if set(HELD_OUT_UNITS) <= set(GAT_ACTIVA_UNITS) else [])
    inputs = {
        "adata": f"{d}/preprocessed.h5ad",
        "embedding": f"{d}/figures/umap_embedding.csv",
        "predictions": run_files(models, HELD_OUT_UNITS, "predictions.csv", wildcards.dataset),
        "run_metrics": run_files(models, HELD_OUT_UNITS, "metrics.json", wildcards.dataset),
        "config": f"{d}/provenance/config.yaml",
        "provenance": f"{d}/provenance/provenance.json",
    }
    for name, f in (("models", "models"), ("summary", "models_summary"), ("folds", "folds"), ("calls", "calls"),
                    ("margins", "margins"), ("response", "cell_types")):
        inputs[name] = f"{d}/metrics/{f}.csv"
    if RUN["explain"]["run"]:
        for name, f in (("genes", "genes.csv"), ("scores", "ground_truth_scores.csv"),
                        ("scores_by_cell_type", "ground_truth_scores_by_cell_type.csv"),
                        ("scores_summary", "scores_summary.csv"), ("cell_types", "cell_types.csv"),
                        ("explain_run", "run.json")):
            inputs[name] = f"{d}/explain/{f}"
    return inputs
