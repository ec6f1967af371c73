"""Provenance: resolved config, git commit, package versions and seeds of a results folder."""
import json
import re
from pathlib import Path

import yaml

from cellgnn.config import validate_config
from cellgnn.provenance import collect_seeds, git_state, package_versions, write_provenance
from test_workflow import TINY, snakemake

ROOT = Path(__file__).resolve().parents[1]


def test_git_state_in_and_outside_a_checkout(tmp_path):
    state = git_state(ROOT)
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and isinstance(state["dirty"], bool)
    assert git_state(tmp_path) == {"commit": "unknown", "dirty": None}


def test_seeds_and_versions():
    cfg = validate_config(yaml.safe_load(TINY.read_text()))
    seeds = collect_seeds(cfg)
    assert seeds["seed"] == 0 and seeds["train.seeds"] == [0, 1] and seeds["data.simulate.seed"] == 0
    assert seeds["augment.rare.seeds"] == [0, 1, 2] and "explain.seed" in seeds
    versions = package_versions()
    assert versions["torch"].startswith("2.") and versions["python"].count(".") == 2
    assert versions["cellgnn"] == "0.1.0" and versions["numpy"] != "not installed" and package_versions(("no-such-pkg-xyz",))["no-such-pkg-xyz"] == \
        "not installed"


def test_write_provenance_resolved_config_roundtrips(tmp_path):
    cfg = validate_config(yaml.safe_load(TINY.read_text()))
    rec = write_provenance(cfg, {"commit": "abc", "dirty": False}, [str(TINY)], ROOT,
                           tmp_path / "p" / "config.yaml", tmp_path / "p" / "provenance.json")
    back = yaml.safe_load((tmp_path / "p" / "config.yaml").read_text())
    assert back == cfg and back["graph"]["k"] == 10 and back["train"]["checkpoint_every"] == 10  # defaults filled
    info = json.loads((tmp_path / "p" / "provenance.json").read_text())
    assert info == json.loads(json.dumps(rec)) and info["git"]["commit"] == "abc"
    assert info["config_files"] == [str(TINY)] and "models.yaml" in info["conda_envs_sha256"]
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["config.yaml", "provenance.json"]  # no temp files


def test_provenance_rule(tmp_path):
    """The real rule, alone: both files, the repository's commit, and a log."""
    snakemake("--cores", "1", "--configfile", str(TINY), "--directory", str(tmp_path),
              "results/tiny/provenance/provenance.json")
    info = json.loads((tmp_path / "results/tiny/provenance/provenance.json").read_text())
    assert info["git"] == git_state(ROOT) and info["dataset"] == "tiny"
    cfg = yaml.safe_load((tmp_path / "results/tiny/provenance/config.yaml").read_text())
    assert cfg["train"]["models"] == ["logreg", "gat"] and cfg["device"] == "auto"
    assert (tmp_path / "logs/tiny/provenance.log").exists()
