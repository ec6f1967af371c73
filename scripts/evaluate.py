"""Rule evaluate: paired comparison of gat_ef against baselines over seeds, and the edge-feature ablation."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.evaluation import run_evaluate  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_evaluate(smk.input.table, list(smk.input.ablation), smk.output.comparison, smk.output.ablation,
                 smk.output.png, smk.params.evaluation)


run_rule(main, snakemake)  # noqa: F821
