# `snakemake paper --cores N`: regenerate every figure of every stage in this workflow,
# and the summary. Included last; the figure list is read from the rules of the workflow
# when the DAG is built, so a stage added later (outputs under results/{dataset}/figures/)
# joins by itself.


rule paper:
    input:
        paper_figures,
    localrule: True
