"""Rule summary: results/{dataset}/summary.md with the model comparison table."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.plots import write_summary  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    write_summary(smk.input.models, smk.input.qc, smk.output[0], smk.wildcards.dataset)


run_rule(main, snakemake)  # noqa: F821
