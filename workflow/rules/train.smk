# collecting the metrics tables is cheap: run on the submit host
localrules:
    collect_metrics,


rule train:
    input:
        unpack(train_inputs),
    output:
        model="results/{dataset}/models/{split}/{model}/seed{seed}/model.pt",
        metrics="results/{dataset}/models/{split}/{model}/seed{seed}/metrics.json",
        predictions="results/{dataset}/models/{split}/{model}/seed{seed}/predictions.csv",
    log:
        "logs/{dataset}/train/{split}/{model}/seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/train/{split}/{model}/seed{seed}.tsv"
    params:
        train=config["train"],
        device=config["device"],
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/train.py"


rule collect_metrics:
    input:
        model_runs,
    output:
        table="results/{dataset}/metrics/models.csv",
        summary="results/{dataset}/metrics/models_summary.csv",
    log:
        "logs/{dataset}/collect_metrics.log",
    benchmark:
        "benchmarks/{dataset}/collect_metrics.tsv"
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/collect_metrics.py"
