rule data:
    output:
        "results/{dataset}/raw.h5ad",
    log:
        "logs/{dataset}/data.log",
    benchmark:
        "benchmarks/{dataset}/data.tsv"
    params:
        data=config["data"],
    conda:
        "../../envs/data.yaml"
    script:
        "../../scripts/data.py"
