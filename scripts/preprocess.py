"""Rule preprocess: QC, normalization, HVG, PCA → preprocessed.h5ad + qc.json."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.io import read_h5ad, write_h5ad, write_json  # noqa: E402
from cellgnn.preprocess import preprocess  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    adata, qc = preprocess(read_h5ad(smk.input[0], "rule data"), smk.params.preprocess, seed=smk.params.seed,
                           source=smk.input[0])
    write_json(qc, smk.output.qc)
    write_h5ad(adata, smk.output.adata)


run_rule(main, snakemake)  # noqa: F821
