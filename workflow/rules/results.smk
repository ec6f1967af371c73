# The results file a scanpy user opens: the preprocessed cells with cellgnn's held-out calls,
# probabilities, kNN graph (scanpy's layout), UMAP, attributions and tables (README "The results file").


rule results:
    input:
        unpack(results_inputs),
    output:
        "results/{dataset}/cellgnn.h5ad",
    log:
        "logs/{dataset}/results.log",
    benchmark:
        "benchmarks/{dataset}/results.tsv"
    params:
        held_out=HELD_OUT_MODE,
        metric=EVAL["metric"],
        graph=config["graph"],
        seed=config["seed"],
        explain=EXPLAIN,
    threads: 1  # its kNN graph is data-parallel: profiles/slurm gives it more cores (set-threads)
    conda:
        "../../envs/results.yaml"
    script:
        "../../scripts/results.py"
