# N-ACT-style cell typing: Leiden clusters on the (Harmony-corrected) PCA, an attention
# classifier over the clusters, salient genes per cluster, obs['cellgnn_cell_type']
# (cellgnn.celltype). Its outputs are not in rule all yet; CELLTYPE_ENABLED tells whether the
# config asks for them (celltype.enabled; auto = when data.keys.cell_type is null).
CELLTYPE_ENABLED = (
    config["data"]["keys"]["cell_type"] is None
    if config["celltype"]["enabled"] == "auto"
    else bool(config["celltype"]["enabled"])
)


rule celltype:
    input:
        adata="results/{dataset}/preprocessed.h5ad",
        markers=config["celltype"]["markers"] or [],
    output:
        assignments="results/{dataset}/celltype/assignments.csv",
        salient="results/{dataset}/celltype/salient_genes.csv",
        metrics="results/{dataset}/celltype/metrics.json",
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
