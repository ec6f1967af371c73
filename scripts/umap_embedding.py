"""Rule umap_embedding: 2-D UMAP coordinates of every cell, from the kNN graph of its PCA."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.plots import run_umap_embedding  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_umap_embedding(smk.input.adata, smk.output.embedding, seed=smk.params.seed, graph=smk.params.graph,
                       epochs=smk.params.epochs)


run_rule(main, snakemake)  # noqa: F821
