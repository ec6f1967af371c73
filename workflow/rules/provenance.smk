# writing two small files: run on the submit host
localrules:
    provenance,


rule provenance:
    output:
        config="results/{dataset}/provenance/config.yaml",
        info="results/{dataset}/provenance/provenance.json",
    log:
        "logs/{dataset}/provenance.log",
    benchmark:
        "benchmarks/{dataset}/provenance.tsv"
    params:
        # params, so that a changed config or commit reruns this rule
        config=config,
        git=GIT_STATE,
        config_files=[str(f) for f in workflow.configfiles],
    conda:
        "../../envs/data.yaml"
    script:
        "../../scripts/provenance.py"
