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
    priority: 3  # every split's graph first: all training and edge-feature jobs wait on them
    conda:
        "../../envs/models.yaml"
    script:
        "../../scripts/graph.py"
