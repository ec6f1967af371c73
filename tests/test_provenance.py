"""Provenance: resolved config, git commit, package versions and seeds of a results folder."""
import hashlib
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
    lock = ROOT / "requirements" / "lock.txt"
    assert info["lock"]["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert info["lock"]["matches"] is True and info["lock"]["differs"] == {}  # the venv is the lock
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


def test_lock_state_says_when_the_environment_differs(tmp_path):
    """A lock whose numpy pin is not what runs here: provenance names it, with both versions."""
    from importlib import metadata

    from cellgnn.provenance import lock_state

    (tmp_path / "requirements").mkdir()
    text = (ROOT / "requirements" / "lock.txt").read_text()
    installed = metadata.version("numpy")
    (tmp_path / "requirements" / "lock.txt").write_text(text.replace(f"numpy=={installed}", "numpy==1.0.0")
                                                        + "no-such-pkg-xyz==1.0\n")
    state = lock_state(tmp_path)
    assert state["matches"] is False and state["differs"] == {"numpy": {"lock": "1.0.0", "installed": installed}}
    assert state["not_installed"] == ["no-such-pkg-xyz"]
