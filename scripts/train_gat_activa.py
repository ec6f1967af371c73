"""Rule train_gat_activa: the GAT on the ACTIVA-topped-up training graph, every seed (model gat_activa)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.train import run_train  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_train(smk.input.graph, "gat", smk.params.seeds, smk.params.train, smk.params.device, smk.output,
                 topup=smk.input.topup, compare_with=list(smk.input.gat_predictions))


run_rule(main, snakemake)  # noqa: F821
