"""Rule umap: UMAP coloured by label, cell type, donor and the best model's test predictions."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.plots import run_umap  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_umap(smk.input.adata, smk.input.embedding, smk.input.models, list(smk.input.predictions),
                smk.params.split, smk.output.png, smk.output.pdf)


run_rule(main, snakemake)  # noqa: F821
