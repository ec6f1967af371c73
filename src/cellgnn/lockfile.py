"""The lock file: exact versions of every package the venv and the conda envs install.

``requirements/lock.txt`` is compiled from ``pyproject.toml`` by ``make lock`` (uv pip
compile, hashes included) for CPython 3.11 on Linux x86_64 with the CPU build of torch.
This module reads it, and is also run as a script before anything is installed, so it
uses the standard library only:

    python3 src/cellgnn/lockfile.py check   # platform + lock up to date with pyproject.toml
    python3 src/cellgnn/lockfile.py stamp   # record pyproject.toml's fingerprint in the lock
    python3 src/cellgnn/lockfile.py envs [--check]  # write (or check) envs/*.yaml pins from the lock
    python3 src/cellgnn/lockfile.py verify  # the running environment against the lock
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock.txt"
PYPROJECT = ROOT / "pyproject.toml"
ENVS = ROOT / "envs"
FINGERPRINT_PREFIX = "# pyproject-dependencies-sha256: "
PLATFORM = {"system": "Linux", "machine": "x86_64", "python": "3.11"}
COVERS = "CPython 3.11 on Linux x86_64 with the CPU build of torch"

# conda-forge package -> pip distribution, where the names differ
CONDA_TO_PIP = {
    "pytorch": "torch",
    "pytorch-gpu": "torch",
    "pytorch-cpu": "torch",
    "pytorch_geometric": "torch-geometric",
    "python-igraph": "igraph",
    "matplotlib-base": "matplotlib",
    "snakemake-minimal": "snakemake",
}
# conda packages that are no Python distribution of the lock
NOT_IN_LOCK = {"python", "cuda-version", "pip"}
_PIN_RE = re.compile(r"^(\s*-\s*)([A-Za-z0-9_.\-]+)(\s*=\s*)([^\s=#]+)(.*)$")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0`` (conda-forge carries no local version labels)."""
    return version.split("+")[0]


def read_lock(path: str | Path = LOCK) -> dict[str, str]:
    """``{normalized name: exact version}`` of every ``name==version`` line of the lock."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==([^\s;\\]+)", line)
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def dependencies_fingerprint(pyproject: str | Path = PYPROJECT, inputs: str | Path | None = None) -> str:
    """sha256 of what the lock is compiled from: build requirements, Python range,
    dependencies and extras of ``pyproject.toml`` (descriptions and tool settings excluded),
    and the ``*.in`` files of ``inputs`` (default: ``requirements/`` beside ``pyproject.toml``)."""
    inputs = Path(pyproject).parent / "requirements" if inputs is None else Path(inputs)
    with open(pyproject, "rb") as fh:
        data = tomllib.load(fh)
    project = data.get("project", {})
    relevant = {
        "build-system": data.get("build-system", {}).get("requires", []),
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    for extra in sorted(inputs.glob("*.in")):
        relevant[extra.name] = extra.read_text()
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def recorded_fingerprint(lock: str | Path = LOCK) -> str | None:
    for line in Path(lock).read_text().splitlines():
        if line.startswith(FINGERPRINT_PREFIX):
            return line[len(FINGERPRINT_PREFIX):].strip()
    return None


def platform_problem() -> str | None:
    """Why the lock cannot be installed here, or None."""
    here = {"system": platform.system(), "machine": platform.machine(),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    if here == PLATFORM and platform.python_implementation() == "CPython":
        return None
    return (f"requirements/lock.txt covers {COVERS}; this is {platform.python_implementation()} {here['python']} "
            f"on {here['system']} {here['machine']}. Use such a machine (PYTHON=python3.11 make install), "
            "or run the workflow with its conda envs (snakemake --sdm conda), whose pins come from the same lock")


def lock_problem(lock: str | Path = LOCK, pyproject: str | Path = PYPROJECT) -> str | None:
    """Why the lock does not match ``pyproject.toml``, or None."""
    if not Path(lock).exists():
        return f"{lock} is missing: run `make lock`"
    if recorded_fingerprint(lock) != dependencies_fingerprint(pyproject):
        return (f"{Path(pyproject).name} changed since {Path(lock).name} was compiled: run `make lock` "
                "(then commit the lock and envs/*.yaml, and rerun the tests and the default run)")
    return None


def stamp(lock: str | Path = LOCK, pyproject: str | Path = PYPROJECT) -> None:
    """Write the fingerprint of ``pyproject.toml`` into the lock's header."""
    lines = [ln for ln in Path(lock).read_text().splitlines() if not ln.startswith(FINGERPRINT_PREFIX)]
    header = [FINGERPRINT_PREFIX + dependencies_fingerprint(pyproject),
              f"# covers: {COVERS}; install with `make install` (pip --require-hashes)"]
    Path(lock).write_text("\n".join(header + [ln for ln in lines if not ln.startswith("# covers: ")]) + "\n")


def conda_pins(text: str) -> dict[str, str]:
    """``{conda package: pinned version}`` of an env file's ``- name=version`` lines."""
    return {m.group(2).lower(): m.group(4) for m in map(_PIN_RE.match, text.splitlines()) if m}


def env_from_lock(text: str, pins: dict[str, str]) -> tuple[str, list[str]]:
    """The env file ``text`` with every pin set to the lock's version; and the packages the lock lacks."""
    out, missing = [], []
    for line in text.splitlines():
        m = _PIN_RE.match(line)
        if m and m.group(2).lower() not in NOT_IN_LOCK:
            pip_name = normalize(CONDA_TO_PIP.get(m.group(2).lower(), m.group(2)))
            if pip_name not in pins:
                missing.append(m.group(2))
            else:
                line = f"{m.group(1)}{m.group(2)}{m.group(3)}{public_version(pins[pip_name])}{m.group(5)}"
        out.append(line)
    return "\n".join(out) + "\n", missing


def sync_envs(lock: str | Path = LOCK, envs: str | Path = ENVS, write: bool = True) -> list[str]:
    """Set (``write``) or compare every ``envs/*.yaml`` pin with the lock; returns the problems."""
    pins = read_lock(lock)
    problems = []
    for env in sorted(Path(envs).glob("*.yaml")):
        text = env.read_text()
        new, missing = env_from_lock(text, pins)
        problems += [f"{env.name}: {name} is not in {Path(lock).name} (add it to pyproject.toml)" for name in missing]
        if new != text:
            if write:
                env.write_text(new)
            else:
                old, want = conda_pins(text), conda_pins(new)
                problems += [f"{env.name}: {k}={old[k]}, lock has {want[k]}" for k in old if old[k] != want[k]]
    return problems


def environment_differences(lock: str | Path = LOCK) -> dict[str, dict[str, str]]:
    """Distributions of the lock whose installed version differs: ``{name: {lock, installed}}``.

    Packages the lock holds but this environment lacks are listed with ``installed: "not installed"``
    (a conda env of one rule family holds a subset of the lock).
    """
    out = {}
    for name, version in sorted(read_lock(lock).items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            out[name] = {"lock": version, "installed": installed}
    return out


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["check", "stamp", "envs", "verify"])
    parser.add_argument("--lock", default=str(LOCK))
    parser.add_argument("--pyproject", default=str(PYPROJECT))
    parser.add_argument("--envs", default=str(ENVS))
    parser.add_argument("--check", action="store_true", help="envs: compare, do not write")
    args = parser.parse_args(argv)
    if args.command == "check":
        problem = platform_problem() or lock_problem(args.lock, args.pyproject)
        if problem:
            print(f"cellgnn install: {problem}", file=sys.stderr)
            return 1
        return 0
    if args.command == "stamp":
        stamp(args.lock, args.pyproject)
        return 0
    if args.command == "envs":
        problems = sync_envs(args.lock, args.envs, write=not args.check)
        for p in problems:
            print(f"cellgnn envs: {p}", file=sys.stderr)
        return 1 if problems else 0
    diffs = environment_differences(args.lock)
    for name, d in diffs.items():
        print(f"cellgnn install: {name} {d['installed']} is installed, the lock has {d['lock']}", file=sys.stderr)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(_main())
