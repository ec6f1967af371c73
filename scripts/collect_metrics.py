"""Rule collect_metrics: gather every run's test metrics into metrics/models.csv (+ 95% CIs)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.train import collect_metrics  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    collect_metrics(list(smk.input), smk.output.table, smk.output.summary)


run_rule(main, snakemake)  # noqa: F821
