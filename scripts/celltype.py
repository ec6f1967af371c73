"""Rule celltype: Leiden clusters, attention classifier, salient genes, cell-type calls."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.celltype import celltype_stage  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    celltype_stage(smk.input.adata, smk.output.assignments, smk.output.salient, smk.output.metrics,
                   smk.params.celltype, smk.params.device, smk.output.adata)


run_rule(main, snakemake)  # noqa: F821
