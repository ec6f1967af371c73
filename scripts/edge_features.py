"""Rule edge_features: self-supervised edge features aligned with the graph's edge_index."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.edge_features import edge_features_stage  # noqa: E402
from cellgnn.utils import set_threads, setup_logging  # noqa: E402

setup_logging(snakemake.log[0])  # noqa: F821
set_threads(snakemake.threads)  # noqa: F821
edge_features_stage(snakemake.input.graph, snakemake.output[0], snakemake.params.cfg,  # noqa: F821
                    seed=snakemake.params.seed, device=snakemake.params.device)  # noqa: F821
