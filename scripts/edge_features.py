"""Rule edge_features: self-supervised edge features aligned row for row with the graph's edge_index."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.edge_features import run_edge_features  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_edge_features(smk.input.graph, smk.output[0], smk.params.cfg, seed=smk.params.cfg["seed"],
                      device=smk.params.device)


run_rule(main, snakemake)  # noqa: F821
