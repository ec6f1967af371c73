"""Wall time of the tiny end-to-end config on the local executor vs on a one-node SLURM.

    python bench/slurm_overhead.py            (as root; starts and stops its own cluster,
                                               or uses the one named by $SLURM_CONF)

Runs, one after the other on this machine: start the cluster (tests/slurm/start_cluster.sh),
the local run (profiles/default, --cores = this machine's CPUs) and the SLURM run
(profiles/slurm + the test overrides of tests/slurm), each in a fresh copy of the
workflow. Prints the three times, the SLURM overhead and the ratio, and checks that the
metrics tables agree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "slurm"))

from slurmtools import Cluster, copy_workflow, make_test_profile, run_snakemake, slurm_env  # noqa: E402

TINY = "tests/data/tiny.yaml"


def describe(conf: str) -> Cluster:
    env = slurm_env(conf)
    out = subprocess.run(["sinfo", "-h", "-o", "%P|%m|%c|%G"], check=True, capture_output=True,
                         text=True, env=env).stdout.splitlines()[0]
    p, m, c, g = out.split("|")
    return Cluster(conf, p.rstrip("*"), int(m), int(c), int("gpu" in g), env)


def metrics(workdir: Path) -> dict[str, pd.DataFrame]:
    ds = yaml.safe_load((ROOT / TINY).read_text())["dataset"]
    return {f.name: pd.read_csv(f) for f in sorted((workdir / "results" / ds / "metrics").glob("*.csv"))}


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cellgnn-bench-slurm-"))
    state = None
    t0 = time.perf_counter()
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        state = tmp / "cluster"
        out = subprocess.run([str(ROOT / "tests/slurm/start_cluster.sh"), str(state)], check=True,
                             capture_output=True, text=True).stdout
        conf = out.strip().splitlines()[-1].split("=", 1)[1]
    t_cluster = time.perf_counter() - t0
    try:
        cluster = describe(conf)
        cores = str(os.cpu_count())
        local_dir = copy_workflow(tmp / "local")
        env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
        local = run_snakemake(local_dir, ["--workflow-profile", "profiles/default", "--cores", cores,
                                          "--configfile", TINY], env)
        assert local.returncode == 0, local.output[-3000:]

        slurm_dir = copy_workflow(tmp / "slurm")
        profile = make_test_profile(cluster, slurm_dir / "test-profile" / "config.yaml")
        remote = run_snakemake(slurm_dir, ["--workflow-profile", str(profile), "--configfile", TINY],
                               cluster.env)
        assert remote.returncode == 0, remote.output[-3000:]
    finally:
        if state is not None:
            subprocess.run([str(ROOT / "tests/slurm/stop_cluster.sh"), str(state)], check=False)

    same = metrics(local_dir).keys() == metrics(slurm_dir).keys() and all(
        pd.testing.assert_frame_equal(metrics(slurm_dir)[k], v, check_exact=False, rtol=1e-6) is None
        for k, v in metrics(local_dir).items()
    )
    n_jobs = len(remote.submissions)
    slurm_total = t_cluster + remote.seconds
    print(f"config {TINY}; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"cluster start          {t_cluster:8.1f} s")
    print(f"local run  (--cores {cores}) {local.seconds:8.1f} s  ({len(local.jobs)} jobs)")
    print(f"slurm run              {remote.seconds:8.1f} s  ({n_jobs} SLURM jobs, "
          f"{len(remote.jobs) - len({j for j, _, _ in remote.submissions})} local jobs)")
    print(f"slurm incl. cluster    {slurm_total:8.1f} s")
    print(f"overhead               {slurm_total - local.seconds:8.1f} s  "
          f"(ratio {slurm_total / local.seconds:.2f}x)")
    print(f"metrics tables equal   {same}")


if __name__ == "__main__":
    main()
