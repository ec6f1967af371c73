# ACTIVA augmentation of a chosen population, the scGAN baseline, and the rare-population
# experiment (src/cellgnn/augment/). Reads the graph stage's split; never re-splits.


rule augment:
    input:
        adata=TYPED_ADATA,
        graph=f"results/{{dataset}}/graph/{AUGMENT_UNIT}.pt",
    output:
        model="results/{dataset}/augment/activa.pt",
        synthetic="results/{dataset}/augment/synthetic.h5ad",
        metrics="results/{dataset}/augment/metrics.json",
        rare="results/{dataset}/augment/rare_population.csv",
        embedding=report(
            "results/{dataset}/augment/figures/embedding_real_synthetic.png",
            caption="../report/augment_embedding.rst",
            category="Augmentation",
            labels={"figure": "real + synthetic embedding"},
        ),
        embedding_pdf="results/{dataset}/augment/figures/embedding_real_synthetic.pdf",
        auc=report(
            "results/{dataset}/augment/figures/real_vs_synthetic_auc.png",
            caption="../report/augment_auc.rst",
            category="Augmentation",
            labels={"figure": "real-vs-synthetic AUC"},
        ),
        auc_pdf="results/{dataset}/augment/figures/real_vs_synthetic_auc.pdf",
        rare_plot=report(
            "results/{dataset}/augment/figures/rare_population_f1.png",
            caption="../report/augment_rare.rst",
            category="Augmentation",
            labels={"figure": "rare-population F1"},
        ),
        rare_plot_pdf="results/{dataset}/augment/figures/rare_population_f1.pdf",
    log:
        "logs/{dataset}/augment/augment.log",
    benchmark:
        "benchmarks/{dataset}/augment/augment.tsv"
    params:
        augment=config["augment"],
        seed=config["seed"],
        device=config["device"],
        checkpoint="results/{dataset}/augment/checkpoints/activa_last.pt",
    threads: 1  # a second thread saves less than the core it would leave idle beside one-thread jobs
    priority: PRIORITY["augment"]
    resources:
        gpu=1,
    conda:
        "../../envs/augment.yaml"
    script:
        "../../scripts/augment.py"


rule augment_topup:
    # synthetic training cells for the rare classes of one graph split (model gat_activa)
    input:
        adata=TYPED_ADATA,
        graph="results/{dataset}/graph/{split}.pt",
    output:
        "results/{dataset}/augment/topup/{split}.pt",
    log:
        "logs/{dataset}/augment/topup_{split}.log",
    benchmark:
        "benchmarks/{dataset}/augment/topup_{split}.tsv"
    params:
        augment=config["augment"],
        seed=config["seed"],
        device=config["device"],
    threads: 1  # tiny MLPs: a second intra-op thread only adds contention on a busy CPU
    priority: PRIORITY["augment_topup"]
    resources:
        gpu=1,
    conda:
        "../../envs/augment.yaml"
    script:
        "../../scripts/augment_topup.py"


rule train_gat_activa:
    # the GAT trained on the topped-up training graph; evaluated on real test cells
    input:
        graph="results/{dataset}/graph/{split}.pt",
        topup="results/{dataset}/augment/topup/{split}.pt",
        gat_predictions=seed_outputs("gat", "predictions.csv"),
    output:
        model=seed_outputs("gat_activa", "model.pt"),
        metrics=seed_outputs("gat_activa", "metrics.json"),
        predictions=seed_outputs("gat_activa", "predictions.csv"),
    log:
        "logs/{dataset}/train/{split}/gat_activa.log",
    benchmark:
        "benchmarks/{dataset}/train/{split}/gat_activa.tsv"
    params:
        train=config["train"],
        seeds=SEEDS,
        device=config["device"],
    threads: 1
    priority: PRIORITY["gat_activa"]
    resources:
        gpu=1,
    conda:
        "../../envs/augment.yaml"
    script:
        "../../scripts/train_gat_activa.py"
