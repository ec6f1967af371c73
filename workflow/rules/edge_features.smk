# the paired comparison / ablation table and its figure are cheap: run on the submit host
localrules:
    evaluate,


rule edge_features:
    input:
        graph="results/{dataset}/graph/{split}.pt",
    output:
        "results/{dataset}/edge_features/{split}.pt",
    log:
        "logs/{dataset}/edge_features/{split}.log",
    benchmark:
        "benchmarks/{dataset}/edge_features/{split}.tsv"
    params:
        cfg=config["edge_features"],
        device=config["device"],
    threads: 1
    priority: PRIORITY["edge_features"]
    resources:
        gpu=1,
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/edge_features.py"


rule train_ablation:
    input:
        graph="results/{dataset}/graph/{split}.pt",
        edge_features="results/{dataset}/edge_features/{split}.pt",
    output:
        model=seed_outputs("gat_ef_minus_{group}", "model.pt"),
        metrics=seed_outputs("gat_ef_minus_{group}", "metrics.json"),
        predictions=seed_outputs("gat_ef_minus_{group}", "predictions.csv"),
    log:
        "logs/{dataset}/train/{split}/gat_ef_minus_{group}.log",
    benchmark:
        "benchmarks/{dataset}/train/{split}/gat_ef_minus_{group}.tsv"
    params:
        model="gat_ef",
        seeds=SEEDS,
        train=config["train"],
        device=config["device"],
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/train_ablation.py"


rule evaluate:
    input:
        table="results/{dataset}/metrics/models.csv",
        ablation=ablation_runs,
    output:
        comparison="results/{dataset}/metrics/comparison.csv",
        ablation="results/{dataset}/metrics/ablation.csv",
        png=report(
            "results/{dataset}/figures/edge_feature_evaluation.png",
            caption="../report/edge_feature_evaluation.rst",
            category="Model evaluation",
            labels={"figure": "edge features: paired comparison and ablation"},
        ),
        pdf="results/{dataset}/figures/edge_feature_evaluation.pdf",
    log:
        "logs/{dataset}/evaluate.log",
    benchmark:
        "benchmarks/{dataset}/evaluate.tsv"
    params:
        evaluation={**config["evaluation"], "baselines": RUN["baselines"]},
    conda:
        "../../envs/plots.yaml"
    script:
        "../../scripts/evaluate.py"
