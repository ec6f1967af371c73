"""Rule explain_figures: top genes, method comparison, edge features, cell types (PNG + PDF)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.plots_explain import run_explain_figures  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_explain_figures(smk.input.run, smk.input.raw, smk.output.top_genes, smk.params.method, smk.params.n_top)


run_rule(main, snakemake)  # noqa: F821
