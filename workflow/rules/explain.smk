# plotting the attributions is cheap: run on the submit host
localrules:
    explain_figures,


# Explain stage: gene, cell-type and edge-feature attributions, scored against the
# simulator's planted response genes where they are known; then its four figures.
rule explain:
    input:
        unpack(explain_inputs),
    output:
        genes="results/{dataset}/explain/genes.csv",
        scores="results/{dataset}/explain/ground_truth_scores.csv",
        scores_by_cell_type="results/{dataset}/explain/ground_truth_scores_by_cell_type.csv",
        summary="results/{dataset}/explain/scores_summary.csv",
        cell_types="results/{dataset}/explain/cell_types.csv",
        completeness="results/{dataset}/explain/ig_completeness.csv",
        gnnexplainer_edges="results/{dataset}/explain/gnnexplainer_edges.csv",
        edge_features="results/{dataset}/explain/edge_features.csv",
        run="results/{dataset}/explain/run.json",
    log:
        "logs/{dataset}/explain.log",
    benchmark:
        "benchmarks/{dataset}/explain.tsv"
    params:
        explain=EXPLAIN,
        device=config["device"],
        ablation=ablation_table,
    threads: 1  # on one core it runs beside the last trainings instead of waiting for both cores
    priority: PRIORITY["explain"]
    resources:
        gpu=1,
    conda:
        "../../envs/explain.yaml"
    script:
        "../../scripts/explain.py"


rule explain_figures:
    input:
        run="results/{dataset}/explain/run.json",
        genes="results/{dataset}/explain/genes.csv",
        scores="results/{dataset}/explain/ground_truth_scores.csv",
        cell_types="results/{dataset}/explain/cell_types.csv",
        edge_features="results/{dataset}/explain/edge_features.csv",
        raw="results/{dataset}/raw.h5ad",
    output:
        top_genes=report(
            "results/{dataset}/figures/explain_top_genes.png",
            caption="../report/explain_top_genes.rst",
            category="Explanations - top genes",
            labels={"figure": "top genes per class x cell type"},
        ),
        top_genes_pdf="results/{dataset}/figures/explain_top_genes.pdf",
        methods=report(
            "results/{dataset}/figures/explain_methods.png",
            caption="../report/explain_methods.rst",
            category="Explanations - methods against ground truth",
            labels={"figure": "attribution methods"},
        ),
        methods_pdf="results/{dataset}/figures/explain_methods.pdf",
        edge_features=report(
            "results/{dataset}/figures/explain_edge_features.png",
            caption="../report/explain_edge_features.rst",
            category="Explanations - edge features",
            labels={"figure": "edge-feature importance"},
        ),
        edge_features_pdf="results/{dataset}/figures/explain_edge_features.pdf",
        cell_types=report(
            "results/{dataset}/figures/explain_cell_types.png",
            caption="../report/explain_cell_types.rst",
            category="Explanations - cell types",
            labels={"figure": "per-cell-type accuracy"},
        ),
        cell_types_pdf="results/{dataset}/figures/explain_cell_types.pdf",
    log:
        "logs/{dataset}/figures/explain.log",
    benchmark:
        "benchmarks/{dataset}/figures/explain.tsv"
    params:
        method=EXPLAIN["figure_method"],
        n_top=EXPLAIN["figure_top_genes"],
    conda:
        "../../envs/explain.yaml"
    script:
        "../../scripts/plot_explain.py"
