"""Rule data: load or simulate the study into results/{dataset}/raw.h5ad."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.data import describe, load_dataset  # noqa: E402
from cellgnn.io import write_h5ad  # noqa: E402
from cellgnn.utils import LOG, run_rule  # noqa: E402


def main(smk):
    # downloads are kept in resources/<dataset>/ (not a rule output: a failed run never deletes them)
    adata = load_dataset(smk.params.data, workdir=Path("resources") / smk.wildcards.dataset)
    LOG.info("loaded %s", describe(adata))
    write_h5ad(adata, smk.output[0])


run_rule(main, snakemake)  # noqa: F821
