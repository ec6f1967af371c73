"""Determinism: the tiny workflow run twice, in two directories, gives byte-identical tables (CPU)."""
import os
from pathlib import Path

import pytest

from test_workflow import TINY, snakemake

# every table the tiny workflow writes; metrics/models.csv and the explain tables are the ones that matter
TABLES = ("metrics/models.csv", "metrics/models_summary.csv", "explain/genes.csv",
          "explain/ground_truth_scores.csv", "explain/cell_types.csv")


@pytest.mark.slow
def test_tiny_workflow_twice_gives_identical_tables(tmp_path):
    runs = []
    for name in ("a", "b"):
        work = tmp_path / name
        work.mkdir()
        # device cpu: the guarantee is for CPU (README "Reproducibility")
        snakemake("--cores", "2", "--configfile", str(TINY), "--config", "device=cpu", "--directory", str(work))
        runs.append(work / "results" / "tiny")
    a, b = runs
    for table in TABLES:
        assert (a / table).exists(), table
    csvs = sorted(str(p.relative_to(a)) for p in a.rglob("*.csv"))
    assert set(TABLES) <= set(csvs)
    differ = [f for f in csvs if (a / f).read_bytes() != (b / f).read_bytes()]
    assert differ == [], f"tables differ between two identical runs: {differ}"
    # the resolved config is identical too (provenance.json names its config file, which is the same)
    assert (a / "provenance/config.yaml").read_bytes() == (b / "provenance/config.yaml").read_bytes()
    assert not list(a.rglob("resume.pt")), "resumable checkpoints are removed after success"
    print(f"\n{len(csvs)} tables identical, e.g. {TABLES}; CPUs: {os.cpu_count()}")
