"""Rule augment_topup: ACTIVA cells for the rare classes of one graph split's training cells."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.augment.graph_topup import run_topup  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    cfg = {"seed": smk.params.seed, "device": smk.params.device, **smk.params.augment}
    run_topup(smk.input.adata, smk.input.graph, smk.output[0], cfg)


run_rule(main, snakemake)  # noqa: F821
