# collecting the metrics tables is cheap: run on the submit host
localrules:
    collect_metrics,


# one job trains every seed of a model on one split unit (one process start, one graph load)
rule train:
    input:
        unpack(train_inputs),
    output:
        model=seed_outputs("{model}", "model.pt"),
        metrics=seed_outputs("{model}", "metrics.json"),
        predictions=seed_outputs("{model}", "predictions.csv"),
    log:
        "logs/{dataset}/train/{split}/{model}.log",
    benchmark:
        "benchmarks/{dataset}/train/{split}/{model}.tsv"
    params:
        train=config["train"],
        seeds=SEEDS,
        device=config["device"],
    threads: 1
    priority: train_priority
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
