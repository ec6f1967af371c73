# N-ACT-style cell typing: Leiden clusters on the (Harmony-corrected) PCA, an attention
# classifier over the clusters, salient genes per cluster (cellgnn.celltype). Runs when the
# data has no cell types (celltype.enabled: auto) or when asked (true); RUN["celltype"] says
# whether this run has it. celltyped.h5ad is preprocessed.h5ad with the calls in obs
# (obs['cell_type'] = the calls when the data has none); TYPED_ADATA is what the graph,
# augment and UMAP rules read.


rule celltype:
    input:
        adata="results/{dataset}/preprocessed.h5ad",
        markers=config["celltype"]["markers"] or [],
    output:
        assignments="results/{dataset}/celltype/assignments.csv",
        salient="results/{dataset}/celltype/salient_genes.csv",
        metrics="results/{dataset}/celltype/metrics.json",
        adata="results/{dataset}/celltype/celltyped.h5ad",
    log:
        "logs/{dataset}/celltype.log",
    benchmark:
        "benchmarks/{dataset}/celltype.tsv"
    params:
        celltype=config["celltype"],
        device=config["device"],
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/celltype.yaml"
    script:
        "../../scripts/celltype.py"
