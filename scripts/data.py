"""Rule data: load or simulate the study into results/{dataset}/raw.h5ad (design checked first)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.data import run_data  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    # downloads are kept in resources/<dataset>/ (not a rule output: a failed run never deletes them);
    # the whole config (not a param: changing it must not rerun this rule) checks the design
    run_data(smk.config, Path("resources") / smk.wildcards.dataset, smk.output[0])


run_rule(main, snakemake)  # noqa: F821
