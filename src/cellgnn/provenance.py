"""Provenance stage: what produced a results folder.

``write_provenance(cfg, ...)`` writes ``results/{dataset}/provenance/config.yaml`` (the
resolved config: the user's files with every schema default filled in) and
``provenance.json`` (git commit of the workflow, package versions of the environment,
the lock file's sha256 and every locked package whose installed version differs,
hashes of the pinned conda envs, every seed in the config, the config files given).
Nothing in it depends on the time of the run, so the same inputs give the same files.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

from .io import write_json, write_text

PACKAGES = ("cellgnn", "torch", "torch_geometric", "numpy", "scipy", "pandas", "anndata", "scanpy", "scikit-learn",
            "h5py", "captum", "matplotlib", "jsonschema", "pyyaml", "snakemake", "tqdm")


def git_state(repo_dir: str | Path) -> dict:
    """``{"commit": sha | "unknown", "dirty": bool | None}`` of the git checkout at ``repo_dir``."""
    def git(*args):
        return subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit, "dirty": dirty}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict:
    """Installed version of each distribution, ``"not installed"`` when absent from this environment
    (cellgnn itself: the version of the source tree in use, which is run uninstalled from ``src/``)."""
    from . import __version__

    out = {"python": platform.python_version()}
    for name in names:
        if name == "cellgnn":
            out[name] = __version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def collect_seeds(cfg: dict, prefix: str = "") -> dict:
    """Every ``seed`` / ``seeds`` key of the config, by dotted path (e.g. ``train.seeds``)."""
    out = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(collect_seeds(value, f"{path}."))
        elif key in {"seed", "seeds"}:
            out[path] = value
    return out


def env_hashes(repo_dir: str | Path) -> dict:
    """sha256 of each pinned conda environment ``envs/*.yaml`` (the rules' software)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(repo_dir, "envs").glob("*.yaml"))}


def lock_state(repo_dir: str | Path) -> dict:
    """sha256 of ``requirements/lock.txt`` and the locked distributions whose installed version
    differs (``{name: {lock, installed}}``; a rule's conda env holds a subset of the lock, so
    packages it lacks are listed apart, under ``not_installed``)."""
    from .lockfile import environment_differences

    lock = Path(repo_dir, "requirements", "lock.txt")
    if not lock.exists():
        return {"sha256": None, "matches": None, "differs": {}, "not_installed": []}
    diffs = environment_differences(lock)
    differs = {k: v for k, v in diffs.items() if v["installed"] != "not installed"}
    return {"sha256": hashlib.sha256(lock.read_bytes()).hexdigest(), "matches": not differs, "differs": differs,
            "not_installed": sorted(k for k, v in diffs.items() if v["installed"] == "not installed")}


def provenance(cfg: dict, git: dict, config_files: list[str], repo_dir: str | Path) -> dict:
    """The provenance record of a run of the workflow at ``repo_dir`` with resolved config ``cfg``."""
    return {
        "dataset": cfg.get("dataset"),
        "git": git,
        "config_files": [str(f) for f in config_files],
        "seeds": collect_seeds(cfg),
        "packages": package_versions(),
        "lock": lock_state(repo_dir),
        "platform": {"system": platform.system(), "machine": platform.machine(),
                     "python_implementation": platform.python_implementation()},
        "conda_envs_sha256": env_hashes(repo_dir),
        "executable": sys.executable,
    }


def write_provenance(cfg: dict, git: dict, config_files: list[str], repo_dir: str | Path,
                     config_out: str | Path, info_out: str | Path) -> dict:
    """Write the resolved config (YAML) and the provenance record (JSON), atomically."""
    record = provenance(cfg, git, config_files, repo_dir)
    write_text(yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=None), config_out)
    write_json(record, info_out)
    return record


def _plain(obj):
    """Plain dicts/lists (Snakemake's config may hold dict/list subclasses that YAML cannot dump)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
