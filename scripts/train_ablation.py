"""Rule train_ablation: retrain gat_ef without one edge-feature group (recorded as gat_ef_minus_<group>)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.train import run_train  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_train(smk.input.graph, smk.params.model, smk.params.seeds, smk.params.train, smk.params.device,
                 smk.output, edge_features=smk.input.edge_features, drop_group=smk.wildcards.group)


run_rule(main, snakemake)  # noqa: F821
