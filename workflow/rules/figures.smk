# cheap plotting/table rules run on the submit host, not as cluster jobs
localrules:
    summary,
    umap,
    confusion_matrix,
    model_comparison,


# the embedding needs only the PCA: it runs (as a cluster job) beside training, and the
# figure, which also needs the predictions, is drawn on the submit host
rule umap_embedding:
    input:
        adata="results/{dataset}/preprocessed.h5ad",
    output:
        embedding="results/{dataset}/figures/umap_embedding.csv",
    log:
        "logs/{dataset}/figures/umap_embedding.log",
    benchmark:
        "benchmarks/{dataset}/figures/umap_embedding.tsv"
    params:
        seed=config["seed"],
        graph=config["graph"],
        epochs=config["figures"]["umap_epochs"],
    priority: PRIORITY["umap_embedding"]
    conda:
        "../../envs/plots.yaml"
    script:
        "../../scripts/umap_embedding.py"


rule umap:
    input:
        adata=TYPED_ADATA,
        embedding="results/{dataset}/figures/umap_embedding.csv",
        models="results/{dataset}/metrics/models.csv",
        predictions=held_out_predictions,
    output:
        png=report(
            "results/{dataset}/figures/umap.png",
            caption="../report/umap.rst",
            category="Data and predictions",
            labels={"figure": "UMAP"},
        ),
        pdf="results/{dataset}/figures/umap.pdf",
    log:
        "logs/{dataset}/figures/umap.log",
    benchmark:
        "benchmarks/{dataset}/figures/umap.tsv"
    params:
        split=HELD_OUT_MODE,
    conda:
        "../../envs/plots.yaml"
    script:
        "../../scripts/plot_umap.py"


rule confusion_matrix:
    input:
        models="results/{dataset}/metrics/models.csv",
        predictions=held_out_predictions,
    output:
        png=report(
            "results/{dataset}/figures/confusion_matrix.png",
            caption="../report/confusion_matrix.rst",
            category="Model evaluation",
            labels={"figure": "confusion matrix"},
        ),
        pdf="results/{dataset}/figures/confusion_matrix.pdf",
    log:
        "logs/{dataset}/figures/confusion_matrix.log",
    benchmark:
        "benchmarks/{dataset}/figures/confusion_matrix.tsv"
    params:
        split=HELD_OUT_MODE,
    conda:
        "../../envs/plots.yaml"
    script:
        "../../scripts/plot_confusion.py"


rule model_comparison:
    input:
        table="results/{dataset}/metrics/models.csv",
        summary="results/{dataset}/metrics/models_summary.csv",
    output:
        png=report(
            "results/{dataset}/figures/model_comparison.png",
            caption="../report/model_comparison.rst",
            category="Model evaluation",
            labels={"figure": "model comparison"},
        ),
        pdf="results/{dataset}/figures/model_comparison.pdf",
    log:
        "logs/{dataset}/figures/model_comparison.log",
    benchmark:
        "benchmarks/{dataset}/figures/model_comparison.tsv"
    conda:
        "../../envs/plots.yaml"
    script:
        "../../scripts/plot_model_comparison.py"


rule summary:
    input:
        unpack(summary_inputs),
    output:
        report(
            "results/{dataset}/summary.md",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "summary"},
        ),
    log:
        "logs/{dataset}/summary.log",
    benchmark:
        "benchmarks/{dataset}/summary.tsv"
    params:
        notes=PLAN.notes,
        control=config["explain"]["de_control"],
    conda:
        "../../envs/plots.yaml"
    script:
        "../../scripts/summary.py"
