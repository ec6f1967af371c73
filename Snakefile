# cellgnn: predict the disease state of single cells with graph neural networks.
# Run `snakemake --cores 2` for the embedded default (config/config.yaml);
# `snakemake --configfile config/<study>.yaml --cores N` for a real study.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The embedded default runs when no --configfile is given; a user's config file is validated
# on its own against the schema's defaults (nothing of the demo's config leaks into it).
if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "config" / "config.yaml")



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/celltype.smk"
include: "workflow/rules/graph.smk"
include: "workflow/rules/edge_features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/provenance.smk"
include: "workflow/rules/results.smk"


onerror:
    # the last lines on the user's screen: each failed job's one cellgnn message and its log
    sys.stderr.write(failure_report(log))


rule all:
    default_target: True
    input:
        get_final_output(),
