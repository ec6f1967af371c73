"""Static checks of the per-rule conda environments (no conda needed).

Every rule that runs something has a ``conda:`` directive naming an existing
``envs/*.yaml``; every third-party module its script imports, and every module the
imported ``cellgnn`` modules import in turn, is declared in that env; envs are pinned,
use conda-forge + nodefaults, and pin the versions installed in the project venv.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from cellgnn.lockfile import (CONDA_TO_PIP, NOT_IN_LOCK, environment_differences, lock_problem, normalize,
                              public_version, read_lock, sync_envs)

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
FIRST_PARTY = "cellgnn"

# import name -> conda-forge package names that provide it (first = the canonical one)
IMPORT_TO_CONDA: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn",),
    "skmisc": ("scikit-misc",),
    "torch": ("pytorch", "pytorch-gpu", "pytorch-cpu"),
    "torch_geometric": ("pytorch_geometric",),
    "yaml": ("pyyaml",),
    "igraph": ("python-igraph",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss"),
    "matplotlib": ("matplotlib-base", "matplotlib"),
    "mpl_toolkits": ("matplotlib-base", "matplotlib"),
    "PIL": ("pillow",),
    "umap": ("umap-learn",),
    "snakemake": ("snakemake-minimal", "snakemake"),
}
RUNS = ("shell", "script", "run", "wrapper", "notebook", "cwl")


def conda_names(import_name: str) -> tuple[str, ...]:
    """Conda package names that provide top-level module ``import_name``."""
    return IMPORT_TO_CONDA.get(import_name, (import_name.lower().replace("_", "-"), import_name.lower()))


# --------------------------------------------------------------------------- rules


@dataclass
class Rule:
    name: str
    file: Path
    directives: dict[str, str | None]  # directive -> first string literal in it (or None)
    raw: dict[str, str] = field(default_factory=dict)  # directive -> its source text

    @property
    def runs_something(self) -> bool:
        return any(d in self.directives for d in RUNS)

    def path_of(self, directive: str) -> Path | None:
        value = self.directives.get(directive)
        return (self.file.parent / value).resolve() if value else None


_RULE_RE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.M)
_DIRECTIVE_RE = re.compile(r"^( +)(\w+)\s*:(.*)$")
_STRING_RE = re.compile(r"""^\s*(?:[rf]?)(["'])(.*?)\1""")


def parse_rules(path: Path) -> list[Rule]:
    """Rules of one Snakefile/.smk: name, directives and each directive's first string."""
    lines = path.read_text().splitlines()
    rules: list[Rule] = []
    i = 0
    while i < len(lines):
        m = _RULE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        rule = Rule(m.group(1), path, {})
        i += 1
        indent = None
        current = None
        while i < len(lines) and (not lines[i].strip() or lines[i][0] in " \t#"):
            line = lines[i]
            d = _DIRECTIVE_RE.match(line)
            if d and (indent is None or len(d.group(1)) == indent):
                indent = len(d.group(1))
                current = d.group(2)
                s = _STRING_RE.match(d.group(3))
                rule.directives[current] = s.group(2) if s else None
                rule.raw[current] = d.group(3)
            elif current and line.strip():
                rule.raw[current] += "\n" + line.strip()
                if rule.directives.get(current) is None:
                    s = _STRING_RE.match(line)
                    if s:
                        rule.directives[current] = s.group(2)
            i += 1
        rules.append(rule)
    return rules


def local_rules(root: Path = ROOT) -> set[str]:
    """Names listed in every ``localrules:`` statement of the workflow."""
    names: set[str] = set()
    for f in workflow_files(root):
        for m in re.finditer(r"^localrules\s*:(.*(?:\n[ \t]+.*)*)", f.read_text(), re.M):
            names.update(re.findall(r"\w+", re.sub(r"#.*", "", m.group(1))))
    return names


def workflow_files(root: Path = ROOT) -> list[Path]:
    files = [p for p in (root / "Snakefile", root / "workflow" / "Snakefile") if p.exists()]
    return files + sorted((root / "workflow" / "rules").glob("*.smk"))


def all_rules(root: Path = ROOT) -> list[Rule]:
    return [r for f in workflow_files(root) for r in parse_rules(f)]


# --------------------------------------------------------------------------- imports


def _optional_import_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes that need not succeed: under ``if TYPE_CHECKING`` or in a
    ``try`` whose handler catches ImportError/ModuleNotFoundError."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        guarded: list[ast.stmt] = []
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded = node.body
        elif isinstance(node, ast.Try):
            caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
            if "ImportError" in caught or "ModuleNotFoundError" in caught:
                guarded = node.body
        for stmt in guarded:
            skip.update(id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return skip


def module_file(module: str, src: Path = SRC) -> Path | None:
    """File of first-party module ``a.b.c`` (package ``__init__.py`` or ``.py``)."""
    base = src.joinpath(*module.split("."))
    for cand in (base / "__init__.py", base.with_suffix(".py")):
        if cand.exists():
            return cand
    return None


def _imports_of(path: Path, module: str | None) -> list[str]:
    """Absolute dotted names imported by ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _optional_import_nodes(tree)
    is_pkg = path.name == "__init__.py"
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                parts = module.split(".")
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if prefix == "__future__":
                continue
            names.append(prefix)
            # `from pkg import sub` may import submodule pkg.sub
            names.extend(f"{prefix}.{a.name}" for a in node.names if a.name != "*")
    return names


def third_party_imports(script: Path, src: Path = SRC) -> dict[str, set[str]]:
    """Top-level third-party modules imported by ``script`` and, transitively, by every
    first-party module it imports; maps each to the files importing it."""
    found: dict[str, set[str]] = {}
    seen: set[str] = set()
    todo: list[tuple[Path, str | None]] = [(script, None)]
    while todo:
        path, module = todo.pop()
        for name in _imports_of(path, module):
            top = name.split(".")[0]
            if top == FIRST_PARTY:
                # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
                parts = name.split(".")
                for k in range(1, len(parts) + 1):
                    sub = ".".join(parts[:k])
                    f = module_file(sub, src)
                    if f is not None and sub not in seen:
                        seen.add(sub)
                        todo.append((f, sub))
            elif top and top not in sys.stdlib_module_names:
                found.setdefault(top, set()).add(str(path.relative_to(path.parents[1])))
    return found


# --------------------------------------------------------------------------- envs


def load_env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def env_packages(env: dict) -> dict[str, str | None]:
    """conda package name -> pinned version (None if unpinned)."""
    out: dict[str, str | None] = {}
    for dep in env.get("dependencies", []):
        if not isinstance(dep, str):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:(==?)\s*([^\s=]+))?", dep)
        assert m, f"cannot parse dependency {dep!r}"
        out[m.group(1).lower()] = m.group(3)
    return out


def missing_in_env(imports: dict[str, set[str]], packages: dict[str, str | None]) -> list[str]:
    """Import names of ``imports`` that no package of ``packages`` provides."""
    return sorted(i for i in imports if not any(c.lower() in packages for c in conda_names(i)))


ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
RULES = all_rules()
RUNNING_RULES = [r for r in RULES if r.runs_something]


def _ids(rules):
    return [r.name for r in rules]


# --------------------------------------------------------------------------- tests


def test_workflow_has_rules_and_envs():
    assert RUNNING_RULES, f"no rules found in {[str(f) for f in workflow_files()]}"
    assert len(ENV_FILES) >= 5, "expected one env per rule family in envs/"


@pytest.mark.parametrize("rule", RUNNING_RULES, ids=_ids(RUNNING_RULES))
def test_rule_has_existing_conda_env(rule: Rule):
    env = rule.path_of("conda")
    assert env is not None, f"rule {rule.name} ({rule.file.name}) has no conda: directive"
    assert env.exists(), f"rule {rule.name}: conda env {env} does not exist"
    assert env.parent == (ROOT / "envs").resolve(), f"rule {rule.name}: env {env} not under envs/"


@pytest.mark.parametrize("rule", RUNNING_RULES, ids=_ids(RUNNING_RULES))
def test_env_declares_every_import(rule: Rule):
    script = rule.path_of("script")
    if script is None:
        pytest.skip(f"rule {rule.name} runs no Python script")
    env = rule.path_of("conda")
    assert env is not None and env.exists()
    assert script.exists(), f"rule {rule.name}: script {script} does not exist"
    imports = third_party_imports(script)
    packages = env_packages(load_env(env))
    missing = missing_in_env(imports, packages)
    assert not missing, (
        f"rule {rule.name}: {env.name} lacks "
        + ", ".join(f"{m} (imported by {sorted(imports[m])}; conda: {conda_names(m)[0]})" for m in missing)
    )


@pytest.mark.parametrize("env_file", ENV_FILES, ids=[p.name for p in ENV_FILES])
def test_env_is_pinned_on_conda_forge(env_file: Path):
    env = load_env(env_file)
    assert env["channels"][0] == "conda-forge", f"{env_file.name}: conda-forge must come first"
    assert "nodefaults" in env["channels"], f"{env_file.name}: add nodefaults to channels"
    assert "defaults" not in env["channels"]
    packages = env_packages(env)
    assert "python" in packages
    unpinned = [p for p, v in packages.items() if not v]
    assert not unpinned, f"{env_file.name}: pin {unpinned} with =<version>"
    if {"pytorch", "pytorch-gpu"} & packages.keys():
        text = env_file.read_text()
        assert "pytorch-gpu" in text and "cuda-version" in text, (
            f"{env_file.name}: say in a comment how to get the CUDA build (pytorch-gpu, cuda-version)"
        )


LOCK = ROOT / "requirements" / "lock.txt"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=[p.name for p in ENV_FILES])
def test_env_pins_match_lock(env_file: Path):
    """The conda envs pin the lock's versions (``make lock`` writes them), so they run what the venv runs."""
    pins = read_lock(LOCK)
    mismatched = []
    for name, version in env_packages(load_env(env_file)).items():
        if name == "python":
            if version != "3.11":
                mismatched.append(f"python={version} (the lock is compiled for 3.11)")
            continue
        if name in NOT_IN_LOCK or version is None:
            continue
        locked = pins.get(normalize(CONDA_TO_PIP.get(name, name)))
        if locked is None:
            mismatched.append(f"{name} (not in requirements/lock.txt)")
        elif public_version(locked) != version:
            mismatched.append(f"{name}={version} (lock {locked})")
    assert not mismatched, f"{env_file.name}: {mismatched}; run `make lock` (it rewrites envs/*.yaml from the lock)"


def test_lock_is_up_to_date_with_pyproject():
    assert lock_problem(LOCK, ROOT / "pyproject.toml") is None


def test_venv_matches_lock():
    """`make install` installs exactly the lock: nothing newer, nothing missing."""
    assert environment_differences(LOCK) == {}


def test_envs_check_is_clean_and_flags_a_drifted_pin(tmp_path: Path):
    assert sync_envs(LOCK, ROOT / "envs", write=False) == []
    envs = tmp_path / "envs"
    envs.mkdir()
    text = (ROOT / "envs" / "data.yaml").read_text()
    drifted = re.sub(r"(- pyyaml=)\S+", r"\g<1>6.0.0", text)
    assert drifted != text
    (envs / "data.yaml").write_text(drifted)
    problems = sync_envs(LOCK, envs, write=False)
    assert problems == [f"data.yaml: pyyaml=6.0.0, lock has {read_lock(LOCK)['pyyaml']}"]
    assert (envs / "data.yaml").read_text() == drifted  # --check writes nothing
    assert sync_envs(LOCK, envs, write=True) == []
    assert (envs / "data.yaml").read_text() == text


def test_install_refuses_a_stale_lock_in_one_line(tmp_path: Path):
    """A pyproject.toml edited without `make lock`: the install stops with one line naming the fix."""
    (tmp_path / "requirements").mkdir()
    for f in (ROOT / "requirements").iterdir():
        (tmp_path / "requirements" / f.name).write_bytes(f.read_bytes())
    pyproject = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(pyproject)
    script = ROOT / "src" / "cellgnn" / "lockfile.py"
    args = [sys.executable, str(script), "check", "--lock", str(tmp_path / "requirements" / "lock.txt"),
            "--pyproject", str(tmp_path / "pyproject.toml")]
    ok = subprocess.run(args, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "pyproject.toml").write_text(pyproject.replace('"tqdm>=4.66",', '"tqdm>=4.66",\n    "rich>=13",'))
    stale = subprocess.run(args, capture_output=True, text=True)
    assert stale.returncode == 1
    lines = stale.stderr.strip().splitlines()
    assert len(lines) == 1 and "run `make lock`" in lines[0], stale.stderr
    # a description edit does not stale the lock
    (tmp_path / "pyproject.toml").write_text(pyproject.replace("Graph neural networks", "GNNs"))
    assert subprocess.run(args, capture_output=True, text=True).returncode == 0


def test_install_names_what_the_lock_covers_on_another_platform():
    code = ("import platform, sys; sys.path.insert(0, %r); platform.machine = lambda: 'aarch64';"
            "import cellgnn.lockfile as l; print(l.platform_problem())") % str(ROOT / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "covers CPython 3.11 on Linux x86_64" in out and "aarch64" in out


# ---- the checker itself can fail ----------------------------------------------------


def test_checker_flags_missing_conda_and_undeclared_import(tmp_path: Path):
    (tmp_path / "workflow" / "rules").mkdir(parents=True)
    (tmp_path / "envs").mkdir()
    (tmp_path / "scripts").mkdir()
    pkg = tmp_path / "src" / FIRST_PARTY
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .deep import f\n")
    (pkg / "sub" / "deep.py").write_text(
        "import os\nimport numpy as np\n"
        "def f():\n    from sklearn.metrics import f1_score\n"
        "try:\n    import faiss\nexcept ImportError:\n    faiss = None\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
    )
    (tmp_path / "scripts" / "s.py").write_text(
        "import sys\nfrom cellgnn.sub import f\nimport yaml\n"
    )
    (tmp_path / "envs" / "e.yaml").write_text(
        "channels: [conda-forge, nodefaults]\ndependencies: [python=3.11, numpy=2.4.6, pyyaml=6.0.3]\n"
    )
    (tmp_path / "workflow" / "rules" / "r.smk").write_text(
        'rule with_env:\n    input:\n        "a",\n    output:\n        "b",\n'
        '    conda:\n        "../../envs/e.yaml"\n    script:\n        "../../scripts/s.py"\n\n\n'
        'rule without_env:\n    output: "c"\n    shell: "touch {output}"\n\n'
        'rule all:\n    input: "b"\n'
    )
    rules = {r.name: r for r in all_rules(tmp_path)}
    assert set(rules) == {"with_env", "without_env", "all"}
    assert not rules["all"].runs_something
    assert rules["without_env"].path_of("conda") is None
    assert rules["with_env"].path_of("conda") == (tmp_path / "envs" / "e.yaml").resolve()

    imports = third_party_imports(rules["with_env"].path_of("script"), src=tmp_path / "src")
    # numpy via the package chain, sklearn from a lazy import; faiss (optional) and
    # torch (TYPE_CHECKING) are not required; stdlib is ignored
    assert set(imports) == {"numpy", "sklearn", "yaml"}
    packages = env_packages(load_env(rules["with_env"].path_of("conda")))
    assert missing_in_env(imports, packages) == ["sklearn"]
    assert conda_names("sklearn")[0] == "scikit-learn"
    assert conda_names("torch_geometric") == ("pytorch_geometric",)


def test_env_packages_parses_pins():
    env = {"dependencies": ["python=3.11", "pytorch-gpu=2.13.0", "numpy", {"pip": ["x"]}, "a==1.0"]}
    assert env_packages(env) == {"python": "3.11", "pytorch-gpu": "2.13.0", "numpy": None, "a": "1.0"}
