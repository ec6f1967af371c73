"""Rule summary: results/{dataset}/summary.md with the model, augmentation and explanation tables."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.report import run_summary  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_summary(str(Path(smk.input.models).parent), smk.input.qc, smk.output[0], smk.wildcards.dataset,
                notes=list(smk.params.notes), explain_run=smk.input.get("explain"),
                augment_files=list(smk.input.get("augment", [])), raw=smk.input.raw, control=smk.params.control)


run_rule(main, snakemake)  # noqa: F821
