"""Rule train_gat_activa: GAT on the ACTIVA-topped-up training graph (model name gat_activa)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.augment.graph_topup import run_gat_activa  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_gat_activa(smk.input.graph, smk.input.topup, smk.input.gat_predictions, int(smk.wildcards.seed),
                   smk.params.train, smk.params.device, smk.output)


run_rule(main, snakemake)  # noqa: F821
