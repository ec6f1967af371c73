"""Rule explain: attributions of the trained models on the held-out cells of every explained split
unit (each donor_cv fold explains its own donors), scored against the planted truth or a gene set."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.explain import run_explain  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    run_explain(list(smk.input.graphs), smk.input.raw, list(smk.input.models), str(Path(smk.output.run).parent),
                smk.params.explain, smk.params.device,
                attention_models=list(smk.input.get("attention", [])),
                edge_models=list(smk.input.get("edge_models", [])),
                edge_features_paths=list(smk.input.get("edge_features", [])), ablation_path=smk.params.ablation)


run_rule(main, snakemake)  # noqa: F821
