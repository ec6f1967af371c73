"""Rule results: results/{dataset}/cellgnn.h5ad, the AnnData with cellgnn's calls, graph, UMAP and attributions."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.results import run_results  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_results(dict(smk.input.items()), smk.output[0], smk.params.held_out, smk.params.metric, smk.params.graph,
                smk.params.seed, explain=smk.params.explain, n_jobs=smk.threads)


run_rule(main, snakemake)  # noqa: F821
