"""Rule pretrain: masked-count pretraining on every cell → pretrain/embedding.h5ad + model.pt."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.pretrain import run_pretrain  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_pretrain(smk.input[0], smk.output.embedding, smk.output.model, smk.params.cfg, smk.params.device)


run_rule(main, snakemake)  # noqa: F821
