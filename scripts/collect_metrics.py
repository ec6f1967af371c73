"""Rule collect_metrics: every run's test metrics -> metrics/models.csv (donor_cv pooled over folds),
folds.csv, models_summary.csv (95% intervals), calls.csv (donor / sample calls) and margins.csv."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.heldout import run_collect_metrics  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_collect_metrics(list(smk.input.metrics), list(smk.input.predictions), dict(smk.output.items()),
                    metric=smk.params.metric, seed=smk.params.seed)


run_rule(main, snakemake)  # noqa: F821
