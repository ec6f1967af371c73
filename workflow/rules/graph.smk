rule graph:
    input:
        unpack(graph_inputs),
    output:
        "results/{dataset}/graph/{split}.pt",
    log:
        "logs/{dataset}/graph/{split}.log",
    benchmark:
        "benchmarks/{dataset}/graph/{split}.tsv"
    params:
        graph=config["graph"],
        seed=config["seed"],
    threads: 2
    priority: PRIORITY["graph"]
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/graph.py"
