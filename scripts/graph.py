"""Rule graph: split the cells once and build the kNN graph → graph/{split}.pt."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

import anndata as ad  # noqa: E402

from cellgnn.graph import build_graph, save_graph  # noqa: E402
from cellgnn.pretrain import load_embedding  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    adata = ad.read_h5ad(smk.input.adata)
    embedding = load_embedding(smk.input.pretrain, adata.obs_names) if "pretrain" in smk.input.keys() else None
    graph = build_graph(adata, smk.params.graph, smk.wildcards.split, smk.params.seed, n_jobs=smk.threads,
                        embedding=embedding)
    save_graph(graph, smk.output[0])


run_rule(main, snakemake)  # noqa: F821
