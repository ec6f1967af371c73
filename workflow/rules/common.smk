# Helpers shared by the rule files (config validation, output lists, wildcard constraints).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from cellgnn.config import EDGE_FEATURE_MODELS, validate_config  # noqa: E402
from cellgnn.errors import CellgnnInputError  # noqa: E402
from cellgnn.provenance import git_state  # noqa: E402

try:
    validate_config(
        config,
        Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml",
        source=", ".join(str(f) for f in workflow.configfiles) or "config",
    )
except CellgnnInputError as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None

DATASET = config["dataset"]
GIT_STATE = git_state(workflow.basedir)  # recorded by rule provenance
SPLITS = config["graph"]["split_modes"]
MODELS = config["train"]["models"]
SEEDS = config["train"]["seeds"]
# the honest split mode when it runs: figures, the ablation and explanations use it
PREFERRED_SPLIT = "donors" if "donors" in SPLITS else SPLITS[0]
EVAL = config["evaluation"]
RUN_EVALUATION = EVAL["model"] in MODELS
ABLATION_GROUPS = (
    config["edge_features"]["groups"]
    if RUN_EVALUATION and EVAL["ablation"] and EVAL["model"] == "gat_ef"
    and len(config["edge_features"]["groups"]) > 1
    else []
)
# model gat_activa: the GAT on ACTIVA-topped-up training graphs (train_gat_activa, augment.smk)
GAT_ACTIVA = config["augment"]["graph_model"]["enabled"] and "gat" in MODELS
GAT_ACTIVA_SPLITS = [s for s in SPLITS if s in (config["augment"]["graph_model"]["splits"] or SPLITS)]


wildcard_constraints:
    dataset=DATASET,
    split="|".join(SPLITS),
    model="|".join(MODELS),
    seed=r"\d+",
    group="|".join(config["edge_features"]["groups"]),


def train_inputs(wildcards):
    """The graph, plus the edge features for models that need them."""
    inputs = {"graph": f"results/{wildcards.dataset}/graph/{wildcards.split}.pt"}
    if wildcards.model in EDGE_FEATURE_MODELS:
        inputs["edge_features"] = f"results/{wildcards.dataset}/edge_features/{wildcards.split}.pt"
    return inputs


def ablation_runs(wildcards):
    """metrics.json of gat_ef retrained without each edge-feature group, on the preferred
    split mode (empty when off)."""
    return expand(
        "results/{dataset}/models/{split}/gat_ef_minus_{group}/seed{seed}/metrics.json",
        dataset=wildcards.dataset,
        split=PREFERRED_SPLIT,
        group=ABLATION_GROUPS,
        seed=SEEDS,
    )


def model_runs(wildcards):
    """metrics.json of every model x split mode x seed, and of gat_activa on its split modes."""
    pattern = "results/{dataset}/models/{split}/{model}/seed{seed}/metrics.json"
    runs = expand(pattern, dataset=wildcards.dataset, split=SPLITS, model=MODELS, seed=SEEDS)
    if GAT_ACTIVA:
        runs += expand(pattern, dataset=wildcards.dataset, split=GAT_ACTIVA_SPLITS, model="gat_activa", seed=SEEDS)
    return runs


EXPLAIN_FIGURES = ["explain_top_genes", "explain_methods", "explain_edge_features", "explain_cell_types"]


def figure_outputs():
    return expand(
        "results/{dataset}/figures/{fig}.{ext}",
        dataset=DATASET,
        fig=["umap", "confusion_matrix", "model_comparison", *EXPLAIN_FIGURES],
        ext=["png", "pdf"],
    )


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
    return [
        f"results/{DATASET}/metrics/models.csv",
        f"results/{DATASET}/summary.md",
        *figure_outputs(),
        *evaluation,
        f"results/{DATASET}/augment/metrics.json",
        f"results/{DATASET}/provenance/config.yaml",
        f"results/{DATASET}/provenance/provenance.json",
    ]


def preferred_split_predictions(wildcards):
    """predictions.csv of every model and seed on the preferred split mode (donors when run);
    the plotting code picks the best model from metrics/models.csv."""
    return expand(
        "results/{dataset}/models/{split}/{model}/seed{seed}/predictions.csv",
        dataset=wildcards.dataset,
        split=PREFERRED_SPLIT,
        model=MODELS,
        seed=SEEDS,
    )


def active_outputs():
    """workflow_outputs() of the stages this config runs (rules are defined in every run;
    the edge-feature evaluation is switched off by the config when its model is not trained)."""
    return workflow_outputs(skip=set() if RUN_EVALUATION else {"evaluate"})


def workflow_outputs(skip=()):
    """Every output path of this workflow's rules with {dataset} filled in and no other
    wildcard left (used to find optional stages: explain, augment, edge-feature ablation)."""
    import re

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
EXPLAIN = config["explain"]
EXPLAIN_SPLIT = EXPLAIN["split"] if EXPLAIN["split"] in SPLITS else PREFERRED_SPLIT


def _explain_models(model, wildcards):
    return expand(
        "results/{dataset}/models/{split}/{model}/seed{seed}/model.pt",
        dataset=wildcards.dataset,
        split=EXPLAIN_SPLIT,
        model=model,
        seed=SEEDS,
    )


def explain_inputs(wildcards):
    """Graph, truth and the checkpoints the configured methods need; edge features and the
    attention model only when they are part of this run."""
    methods = EXPLAIN["methods"]
    inputs = {
        "graph": f"results/{wildcards.dataset}/graph/{EXPLAIN_SPLIT}.pt",
        "raw": f"results/{wildcards.dataset}/raw.h5ad",
        "models": _explain_models(EXPLAIN["model"], wildcards),
    }
    if "attention" in methods and EXPLAIN["attention_model"] in MODELS:
        inputs["attention"] = _explain_models(EXPLAIN["attention_model"], wildcards)
    if EXPLAIN["edge_model"] in MODELS:
        inputs["edge_models"] = _explain_models(EXPLAIN["edge_model"], wildcards)
    if EXPLAIN["model"] in EDGE_FEATURE_MODELS or "edge_models" in inputs:
        inputs["edge_features"] = f"results/{wildcards.dataset}/edge_features/{EXPLAIN_SPLIT}.pt"
    ablation = f"results/{wildcards.dataset}/metrics/ablation.csv"
    if ablation in active_outputs():
        inputs["ablation"] = ablation
    return inputs


def summary_inputs(wildcards):
    """Model table and QC, plus the explain and augment stages' tables when this workflow has them."""
    inputs = {
        "models": f"results/{wildcards.dataset}/metrics/models.csv",
        "qc": f"results/{wildcards.dataset}/qc.json",
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
