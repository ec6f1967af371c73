"""Static checks of the local and SLURM profiles against the workflow's rules."""

from __future__ import annotations

import re

import pytest
import yaml

from test_envs import ROOT, RULES, local_rules

PROFILES = ROOT / "profiles"
RULE_NAMES = {r.name for r in RULES}
GPU_RULES = {r.name for r in RULES if re.search(r"\bgpu\s*=\s*1\b", r.raw.get("resources", ""))}
# stages whose non-local rules train or explain a model: they must ask for a GPU
GPU_STAGE_FILES = {"train.smk", "edge_features.smk", "augment.smk", "explain.smk"}


def load(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def test_default_profile_limits_gpu_jobs():
    profile = load("default")
    assert profile["resources"]["gpu"] == 1
    assert "cores" in profile
    assert "executor" not in profile


def test_slurm_profile_basics():
    profile = load("slurm")
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1
    assert "resources" not in profile, "a global gpu limit would throttle the whole cluster run"
    defaults = profile["default-resources"]
    assert {"runtime", "mem_mb", "slurm_partition"} <= defaults.keys()
    assert "attempt" in str(defaults["mem_mb"]), "memory must grow with the retry attempt"


def test_slurm_profile_names_existing_rules_only():
    profile = load("slurm")
    for key in ("set-resources", "set-threads"):
        unknown = set(profile.get(key, {})) - RULE_NAMES
        assert not unknown, f"{key} names rules that do not exist: {unknown}"


def test_slurm_profile_sends_gpu_rules_to_a_gpu_partition():
    resources = load("slurm").get("set-resources", {})
    default_partition = load("slurm")["default-resources"]["slurm_partition"]
    for rule in GPU_RULES - local_rules():
        assert rule in resources, f"GPU rule {rule} has no set-resources entry"
        assert resources[rule].get("slurm_partition", default_partition) != default_partition, rule
        assert "attempt" in str(resources[rule].get("mem_mb", "attempt"))


def test_gpu_stages_ask_for_a_gpu_and_cheap_rules_are_local():
    assert GPU_RULES, "no rule carries resources: gpu=1"
    local = local_rules()
    for rule in RULES:
        if rule.file.name in GPU_STAGE_FILES and rule.runs_something and rule.name not in local:
            assert rule.name in GPU_RULES, f"rule {rule.name} ({rule.file.name}) lacks resources: gpu=1"
    assert {"data", "collect_metrics", "summary"} <= local, local
    assert not GPU_RULES & local


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_site_specific_resources_stay_in_profiles(rule):
    """Partition, account and GPU model belong to profiles/slurm, never to the workflow."""
    text = rule.raw.get("resources", "")
    assert not re.search(r"slurm_partition|slurm_account|gpu_model|slurm_extra", text), rule.name
