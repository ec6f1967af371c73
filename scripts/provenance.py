"""Rule provenance: resolved config, git commit, package versions and seeds of this results folder."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from cellgnn.provenance import write_provenance  # noqa: E402
from cellgnn.utils import run_rule  # noqa: E402


def main(smk):
    write_provenance(smk.params.config, smk.params.git, smk.params.config_files, Path(smk.scriptdir).parent,
                     smk.output.config, smk.output.info)


run_rule(main, snakemake)  # noqa: F821
