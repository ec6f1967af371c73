"""Rule model_comparison: test metrics per model and split mode, with 95% intervals (figure)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.plots import run_model_comparison  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_model_comparison(smk.input.table, smk.input.summary, smk.output.png, smk.output.pdf)


run_rule(main, snakemake)  # noqa: F821
