# `snakemake paper --cores N`: regenerate every figure of every stage in this workflow,
# and the summary. Included last: the figure list is read from the rules defined above,
# so a stage added later (with outputs under results/{dataset}/figures/) joins by itself.
import re


def with_dataset(path):
    """``path`` with its {dataset} wildcard (constraint included) set to this run's dataset."""
    return re.sub(r"\{dataset(,[^}]*)?\}", DATASET, str(path))


def paper_figures(wildcards):
    """Every PNG/PDF under results/<dataset>/figures/ that some rule writes, plus summary.md."""
    figures = set()
    for r in workflow.rules:
        for f in r.output:
            path = with_dataset(f)
            if "/figures/" in path and path.endswith((".png", ".pdf")) and "{" not in path:
                figures.add(path)
    return sorted(figures) + [f"results/{DATASET}/summary.md"]


rule paper:
    input:
        paper_figures,
    localrule: True
