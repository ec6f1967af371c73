"""Rule augment: train ACTIVA and the scGAN baseline, generate, evaluate, rare-population run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.augment.stage import run_augment  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    cfg = {"seed": smk.params.seed, "device": smk.params.device, **smk.params.augment}
    run_augment(smk.input.adata, smk.input.graph, dict(smk.output.items()), cfg,
                checkpoint=smk.params.checkpoint, threads=smk.threads)


run_rule(main, snakemake)  # noqa: F821
