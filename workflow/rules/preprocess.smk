rule preprocess:
    input:
        "results/{dataset}/raw.h5ad",
    output:
        adata="results/{dataset}/preprocessed.h5ad",
        qc="results/{dataset}/qc.json",
    log:
        "logs/{dataset}/preprocess.log",
    benchmark:
        "benchmarks/{dataset}/preprocess.tsv"
    params:
        preprocess=config["preprocess"],
        seed=config["seed"],
    threads: 2
    conda:
        "../../envs/data.yaml"
    script:
        "../../scripts/preprocess.py"
