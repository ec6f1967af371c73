# downloads need the internet, which cluster compute nodes often lack: run on the submit host
localrules:
    data,


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
