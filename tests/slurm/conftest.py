"""A real one-node SLURM cluster for the ``slurm`` tests.

The cluster is the one named by ``$SLURM_CONF`` when that answers (e.g. started by
``tests/slurm/run_ci_slurm.sh``); otherwise, as root, this starts one with
``start_cluster.sh`` for the session and stops it afterwards. Elsewhere the tests skip,
except under ``CI=true`` where a missing cluster is an error.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from slurmtools import HERE, Cluster, slurm_env


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(reason: str):
    if _ci():
        pytest.fail(f"SLURM cluster needed under CI=true: {reason}")
    pytest.skip(reason)


def _describe(conf: str) -> Cluster | None:
    env = slurm_env(conf)
    try:
        subprocess.run(["scontrol", "ping"], check=True, capture_output=True, env=env, timeout=20)
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%m|%c|%G"], check=True, capture_output=True,
                             text=True, env=env, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    partition, mem, cpus, gpus = None, 0, 0, 0
    for line in out.splitlines():
        p, m, c, g = line.split("|")
        if p.endswith("*"):
            partition = p.rstrip("*")
        mem = max(mem, int(re.sub(r"\D", "", m) or 0))
        cpus = max(cpus, int(re.sub(r"\D", "", c) or 0))
        found = re.search(r"gpu(?::[\w.]+)?:(\d+)", g)
        gpus = max(gpus, int(found.group(1)) if found else 0)
    if partition is None:
        return None
    return Cluster(conf, partition, mem, cpus, gpus, env)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Cluster:
    conf = os.environ.get("SLURM_CONF")
    if conf:
        cluster = _describe(conf)
        if cluster is None:
            _unavailable(f"SLURM_CONF={conf} is set but the cluster does not answer")
        yield cluster
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _unavailable("no $SLURM_CONF and not root: cannot start a test cluster "
                     "(run tests/slurm/run_ci_slurm.sh as root)")
    state = tmp_path_factory.mktemp("slurm-cluster")
    start = subprocess.run([str(HERE / "start_cluster.sh"), str(state)], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=900)
    if start.returncode != 0:
        pytest.fail(f"start_cluster.sh failed:\n{start.stderr[-3000:]}")
    conf = start.stdout.strip().splitlines()[-1].split("=", 1)[1]
    cluster = _describe(conf)
    try:
        if cluster is None:
            pytest.fail(f"cluster started in {state} does not answer")
        yield cluster
    finally:
        subprocess.run([str(HERE / "stop_cluster.sh"), str(state)], timeout=120)


