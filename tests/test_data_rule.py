"""The workflow's data rule on a sample sheet served by a local HTTP server (snakemake CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest
import yaml
from fixtures_10x import http_server, small_counts, write_10x_h5

ROOT = Path(__file__).resolve().parents[1]


def _workflow_copy(tmp: Path) -> None:
    for name in ("Snakefile", "workflow", "scripts", "src", "envs"):
        if (ROOT / name).exists():
            (tmp / name).symlink_to(ROOT / name)
    (tmp / "config").mkdir()
    (tmp / "config" / "config.yaml").symlink_to(ROOT / "config" / "config.yaml")


def _snakemake(tmp: Path, target: str, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([str(exe), target, "--cores", "1", *args, "--configfile", "run.yaml"], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two snakemake runs: ~30-80 s on the shared 2-core machine
def test_data_rule_downloads_samplesheet_and_keeps_files_on_failure(tmp_path):
    _workflow_copy(tmp_path)
    files = {}
    for i, s in enumerate(["C51", "C141", "C143"]):
        files[f"/{s}.h5"] = write_10x_h5(small_counts(40, 30, seed=i), tmp_path / f"{s}.h5").read_bytes()
    with http_server(files) as srv:
        rows = [(s, f"{srv.base}/{s}.h5", c) for s, c in [("C51", "control"), ("C141", "moderate"), ("C143", "severe")]]
        (tmp_path / "s.tsv").write_text("sample\turl\tcondition\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows))
        cfg = {"dataset": "t", "data": {"source": "samplesheet", "samplesheet": {"path": "s.tsv"},
                                        "download": {"backoff": 0.01, "retries": 1, "progress": False},
                                        "keys": {"cell_type": None}},
               "graph": {"split_modes": ["cells"]}}  # one donor per class: only the cells split applies
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
        res = _snakemake(tmp_path, "results/t/raw.h5ad")
        assert res.returncode == 0, res.stderr[-3000:]
        adata = ad.read_h5ad(tmp_path / "results/t/raw.h5ad")
        assert adata.n_obs == 120 and set(adata.obs["label"]) == {"control", "moderate", "severe"}
        assert adata.uns["cellgnn"]["source"]["kind"] == "samplesheet"
        for s in ("C51", "C141", "C143"):
            assert (tmp_path / "resources/t" / s / f"{s}.h5.sha256").exists()

        # a new sample whose URL 404s: the rule fails with a clear log line, earlier downloads stay
        with open(tmp_path / "s.tsv", "a") as fh:
            fh.write(f"C200\t{srv.base}/C200.h5\tsevere\n")
        res = _snakemake(tmp_path, "results/t/raw.h5ad", "--forcerun", "data")
    assert res.returncode != 0
    log = (tmp_path / "logs/t/data.log").read_text()
    assert "HTTP 404" in log and "C200.h5" in log
    assert (tmp_path / "resources/t/C51/C51.h5").read_bytes() == files["/C51.h5"]
    assert not (tmp_path / "results/t/raw.h5ad").exists()  # snakemake removed the failed job's output only
