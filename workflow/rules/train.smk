# collecting the metrics tables is cheap: run on the submit host
localrules:
    collect_metrics,


# One job per split unit trains every seed of the models that read the graph alone, and one
# more every seed of the edge-feature models (they wait for the edge_features rule): two process
# starts and graph loads per unit instead of one per model.
rule train:
    input:
        graph="results/{dataset}/graph/{split}.pt",
    output:
        model=seed_outputs(NODE_MODELS, "model.pt"),
        metrics=seed_outputs(NODE_MODELS, "metrics.json"),
        predictions=seed_outputs(NODE_MODELS, "predictions.csv"),
    log:
        "logs/{dataset}/train/{split}/node_models.log",
    benchmark:
        "benchmarks/{dataset}/train/{split}/node_models.tsv"
    params:
        models=NODE_MODELS,
        train=config["train"],
        seeds=SEEDS,
        device=config["device"],
    threads: 1
    priority: PRIORITY["train"]
    resources:
        gpu=1,
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/train.py"


rule train_ef:
    input:
        graph="results/{dataset}/graph/{split}.pt",
        edge_features="results/{dataset}/edge_features/{split}.pt",
    output:
        model=seed_outputs(EDGE_MODELS, "model.pt"),
        metrics=seed_outputs(EDGE_MODELS, "metrics.json"),
        predictions=seed_outputs(EDGE_MODELS, "predictions.csv"),
    log:
        "logs/{dataset}/train/{split}/edge_models.log",
    benchmark:
        "benchmarks/{dataset}/train/{split}/edge_models.tsv"
    params:
        models=EDGE_MODELS,
        train=config["train"],
        seeds=SEEDS,
        device=config["device"],
    threads: 1
    priority: PRIORITY["train_ef"]
    resources:
        gpu=1,
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/train.py"


rule collect_metrics:
    input:
        metrics=model_runs,
        predictions=model_predictions,
    output:
        table="results/{dataset}/metrics/models.csv",
        summary="results/{dataset}/metrics/models_summary.csv",
        folds="results/{dataset}/metrics/folds.csv",
        calls="results/{dataset}/metrics/calls.csv",
        margins="results/{dataset}/metrics/margins.csv",
        cell_types="results/{dataset}/metrics/cell_types.csv",
    log:
        "logs/{dataset}/collect_metrics.log",
    benchmark:
        "benchmarks/{dataset}/collect_metrics.tsv"
    params:
        metric=EVAL["metric"],
        seed=config["seed"],
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/collect_metrics.py"
