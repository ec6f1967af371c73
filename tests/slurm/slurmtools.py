"""Helpers to drive Snakemake's slurm executor against the test cluster (see conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# what a run needs from the repository (copied, so every test has its own workdir)
WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "src", "envs", "profiles", "config", "tests/data")


@dataclass
class Cluster:
    conf: str
    partition: str  # the default partition
    mem_mb: int  # memory of the (largest) node
    cpus: int  # CPUs of the (largest) node
    gpus: int  # gpu GRES on the node
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def squeue(self, *fmt: str) -> dict[str, dict[str, str]]:
        """Every job SLURM still remembers (MinJobAge): job id -> {field: value}."""
        fields = ("JobID",) + fmt
        out = subprocess.run(
            ["squeue", "--states=all", "--noheader", "-O", ",".join(f"{f}:|" for f in fields)],
            check=True, capture_output=True, text=True, env=self.env,
        ).stdout
        jobs = {}
        for line in out.splitlines():
            values = [v.strip() for v in line.split("|")[: len(fields)]]
            if values and values[0]:
                jobs[values[0]] = dict(zip(fields, values))
        return jobs


def slurm_env(conf: str) -> dict[str, str]:
    """This environment plus SLURM_CONF, with this interpreter's bin/ first on PATH."""
    env = dict(os.environ)
    env["SLURM_CONF"] = conf
    # SLURM jobs re-run `python -m snakemake` and the rule scripts: resolve both from
    # this interpreter's environment (sbatch exports the environment to the job)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/sbin", "/usr/bin", env.get("PATH", "")])
    return env


# --------------------------------------------------------------------------- helpers


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow (code, envs, profiles, configs) in ``dest``; no results."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake", "results", "logs", "benchmarks")
    for part in WORKFLOW_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore, symlinks=True)
        elif src.exists():
            shutil.copy2(src, dest / part)
    return dest


def make_test_profile(cluster: Cluster, dest: Path, set_resources: dict | None = None) -> Path:
    """profiles/slurm/config.yaml with the test cluster's overrides, written to ``dest``.

    Overrides: every partition -> the cluster's; threads capped at the node's CPUs (a
    job asking more would pend forever); no conda envs (no channels offline); squeue
    status checks (no accounting here) started after 1 s; no account. Everything else
    (retries, attempt-based memory, runtimes, kept logs) is the profile's.
    ``set_resources`` adds or replaces per-rule resources.
    """
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = cluster.partition
    for res in profile.get("set-resources", {}).values():
        if "slurm_partition" in res:
            res["slurm_partition"] = cluster.partition
    for rule, threads in profile.get("set-threads", {}).items():
        profile["set-threads"][rule] = min(int(threads), cluster.cpus)
    for key in ("software-deployment-method", "sdm", "conda-prefix"):
        profile.pop(key, None)
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["slurm-no-account"] = True
    for rule, res in (set_resources or {}).items():
        profile.setdefault("set-resources", {}).setdefault(rule, {}).update(res)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float
    jobs: dict[int, dict]  # snakemake job id -> {"rule", "local", "resources", "output"}
    submissions: list[tuple[int, str, Path]]  # (snakemake job id, SLURM job id, log path)

    def rules_run(self, local: bool | None = None) -> set[str]:
        return {j["rule"] for j in self.jobs.values() if local is None or j["local"] == local}

    def finished_outputs(self) -> set[str]:
        """Outputs of the jobs this run finished (``Finished jobid: N``)."""
        done = {int(n) for n in re.findall(r"^Finished jobid: (\d+)", self.output, re.M)}
        return {o for j in done if j in self.jobs for o in self.jobs[j]["output"]}

    def outputs(self) -> set[str]:
        """Outputs of every job this run started."""
        return {o for j in self.jobs.values() for o in j["output"]}


_JOB_HEAD = re.compile(r"^(localrule|rule) (\w+):$")
_SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")


def parse_run(output: str) -> tuple[dict[int, dict], list[tuple[int, str, Path]]]:
    """Jobs Snakemake started (from its log) and the SLURM submissions."""
    jobs: dict[int, dict] = {}
    head = None
    for line in output.splitlines():
        m = _JOB_HEAD.match(line.strip()) if not line.startswith("    ") else None
        if m:
            head = {"rule": m.group(2), "local": m.group(1) == "localrule", "resources": "", "output": []}
            continue
        if head is not None and line.startswith("    "):
            key, _, value = line.strip().partition(": ")
            if key == "resources":
                head["resources"] = value
            elif key == "output":
                head["output"] = [o.strip() for o in value.split(",") if o.strip()]
            elif key == "jobid":
                jobs[int(value)] = head
        elif head is not None:
            head = None
    subs = [(int(a), b, Path(c)) for a, b, c in _SUBMITTED.findall(output)]
    return jobs, subs


def snakemake_cmd(workdir: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "Snakefile"), *args]


def make_run(returncode: int, output: str, seconds: float) -> Run:
    jobs, subs = parse_run(output)
    return Run(returncode, output, seconds, jobs, subs)


def run_snakemake(workdir: Path, args: list[str], env: dict[str, str], timeout: float = 1500) -> Run:
    t0 = time.perf_counter()
    proc = subprocess.run(snakemake_cmd(workdir, args), cwd=workdir, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    return make_run(proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0)


def mtimes(workdir: Path, paths) -> dict[str, int]:
    """mtime (ns) of each existing file under the given outputs (files or directories)."""
    out = {}
    for rel in paths:
        p = workdir / rel
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        out.update({str(f.relative_to(workdir)): f.stat().st_mtime_ns for f in files})
    return out
