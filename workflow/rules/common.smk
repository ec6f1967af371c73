# Helpers shared by every rule file: config validation, output lists, wildcard constraints.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from cellgnn.config import validate_config  # noqa: E402
from cellgnn.errors import CellgnnInputError  # noqa: E402

try:
    validate_config(
        config,
        Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml",
        source=", ".join(str(f) for f in workflow.configfiles) or "config",
    )
except CellgnnInputError as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None

DATASET = config["dataset"]
SPLITS = config["graph"]["split_modes"]
MODELS = config["train"]["models"]
SEEDS = config["train"]["seeds"]


wildcard_constraints:
    dataset=DATASET,
    split="|".join(SPLITS),
    model="|".join(MODELS),
    seed=r"\d+",


def model_runs(wildcards):
    """metrics.json of every model x split mode x seed."""
    return expand(
        "results/{dataset}/models/{split}/{model}/seed{seed}/metrics.json",
        dataset=wildcards.dataset,
        split=SPLITS,
        model=MODELS,
        seed=SEEDS,
    )


def figure_outputs():
    return expand(
        "results/{dataset}/figures/{fig}.{ext}",
        dataset=DATASET,
        fig=["umap", "confusion_matrix", "model_comparison"],
        ext=["png", "pdf"],
    )


def get_final_output():
    return [
        f"results/{DATASET}/metrics/models.csv",
        f"results/{DATASET}/summary.md",
        *figure_outputs(),
    ]


PREFERRED_SPLIT = "donors" if "donors" in SPLITS else SPLITS[0]


def preferred_split_predictions(wildcards):
    """predictions.csv of every model and seed on the preferred split mode (donors when run);
    the plotting code picks the best model from metrics/models.csv."""
    return expand(
        "results/{dataset}/models/{split}/{model}/seed{seed}/predictions.csv",
        dataset=wildcards.dataset,
        split=PREFERRED_SPLIT,
        model=MODELS,
        seed=SEEDS,
    )
