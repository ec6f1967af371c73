# cellgnn: predict the disease state of single cells with graph neural networks.
# Run `snakemake --cores 2` for the embedded default (config/config.yaml);
# `snakemake --configfile config/<study>.yaml --cores N` for a real study.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/celltype.smk"
include: "workflow/rules/graph.smk"
include: "workflow/rules/edge_features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/provenance.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
