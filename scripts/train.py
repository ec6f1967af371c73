"""Rules train and train_ef: fit every seed of the rule's models on one split unit, in one process;
test metrics + predictions per model and seed."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.train import run_train  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_train(smk.input.graph, smk.params.models, smk.params.seeds, smk.params.train, smk.params.device,
              smk.output, edge_features=smk.input.get("edge_features"))


run_rule(main, snakemake)  # noqa: F821
