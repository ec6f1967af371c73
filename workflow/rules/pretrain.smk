# Exceiver-style masked-count pretraining on every cell, no labels (src/cellgnn/pretrain.py).
# Runs when graph.features or graph.node_features is pretrain: the graph rule then reads its embedding.


rule pretrain:
    input:
        "results/{dataset}/preprocessed.h5ad",
    output:
        embedding="results/{dataset}/pretrain/embedding.h5ad",
        model="results/{dataset}/pretrain/model.pt",
    log:
        "logs/{dataset}/pretrain.log",
    benchmark:
        "benchmarks/{dataset}/pretrain.tsv"
    params:
        cfg=config["pretrain"],
        device=config["device"],
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/pretrain.py"
