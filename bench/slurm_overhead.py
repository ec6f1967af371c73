"""Wall time of the tiny end-to-end config on the local executor vs on a one-node SLURM.

    python bench/slurm_overhead.py [TARGET ...]   (as root; starts and stops its own
                                                   cluster, or uses $SLURM_CONF's)

TARGETs (default: the whole workflow) limit both runs to those outputs.

Runs, one after the other on this machine: start the cluster (tests/slurm/start_cluster.sh),
the local run (profiles/default, --cores = this machine's CPUs) and the SLURM run
(profiles/slurm + the test overrides of tests/slurm), each in a fresh copy of the
workflow. Prints the three times, the SLURM overhead and the ratio, and checks that the
metrics tables agree.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
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


def _stamp(line: str) -> datetime | None:
    m = re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]{8} \d{4})\]", line.strip())
    return datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y") if m else None


def breakdown(workdir: Path) -> pd.DataFrame:
    """Where each SLURM job's time went (1 s resolution), from the run's own logs.

    Per SLURM job: ``queue_start`` = submission (main log) -> the job's Snakemake header
    (SLURM log ``Date:``); ``in_job`` = that header -> the job's last timestamp (its
    "Finished"), which holds the rule itself (``rule_s``, from its benchmark file) and the
    Snakemake starts inside the job; ``detect`` = the job's end -> the main Snakemake
    noticing it (status polling).
    """
    main_log = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text().splitlines()
    stamp, jobs, current = None, {}, None
    for line in main_log:
        t = _stamp(line)
        if t is not None:
            stamp = t
        elif m := re.match(r"(local)?rule (\w+):", line):
            current = {"rule": m.group(2), "local": bool(m.group(1)), "submit": stamp}
        elif current is not None and (m := re.match(r"\s+jobid: (\d+)", line)):
            jobs[int(m.group(1))] = current
        elif current is not None and (m := re.match(r"\s+benchmark: (\S+)", line)):
            current["benchmark"] = m.group(1)
        elif m := re.match(r"Job (\d+) has been submitted with SLURM jobid \d+ \(log: (.+)\)\.", line):
            jobs[int(m.group(1))]["slurm_log"] = m.group(2)
        elif m := re.match(r"Finished jobid: (\d+)", line):
            jobs[int(m.group(1))]["finished"] = stamp
    rows = []
    for j in jobs.values():
        if "slurm_log" not in j or "finished" not in j:
            continue
        text = Path(j["slurm_log"]).read_text().splitlines()
        header = next(datetime.strptime(x.split("Date:")[1].strip(), "%Y-%m-%d %H:%M:%S")
                      for x in text if x.strip().startswith("Date:"))
        end = [t for t in map(_stamp, text) if t is not None][-1]
        bench = workdir / j["benchmark"]
        rule_s = float(pd.read_csv(bench, sep="\t")["s"].iloc[-1]) if bench.exists() else float("nan")
        rows.append({"rule": j["rule"], "queue_start": (header - j["submit"]).total_seconds(),
                     "in_job": (end - header).total_seconds(), "rule_s": rule_s,
                     "detect": (j["finished"] - end).total_seconds()})
    return pd.DataFrame(rows)


def main(targets: list[str]) -> None:
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
        local = run_snakemake(local_dir, [*targets, "--workflow-profile", "profiles/default", "--cores", cores,
                                          "--configfile", TINY], env)
        assert local.returncode == 0, local.output[-3000:]

        slurm_dir = copy_workflow(tmp / "slurm")
        profile = make_test_profile(cluster, slurm_dir / "test-profile" / "config.yaml")
        remote = run_snakemake(slurm_dir, [*targets, "--workflow-profile", str(profile), "--configfile", TINY],
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
    print(f"config {TINY}, targets {targets or 'all'}; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"cluster start          {t_cluster:8.1f} s")
    print(f"local run  (--cores {cores}) {local.seconds:8.1f} s  ({len(local.jobs)} jobs)")
    print(f"slurm run              {remote.seconds:8.1f} s  ({n_jobs} SLURM jobs, "
          f"{len(remote.jobs) - len({j for j, _, _ in remote.submissions})} local jobs)")
    print(f"slurm incl. cluster    {slurm_total:8.1f} s")
    print(f"overhead               {slurm_total - local.seconds:8.1f} s  "
          f"(ratio {slurm_total / local.seconds:.2f}x)")
    print(f"metrics tables equal   {same}")
    parts = breakdown(slurm_dir)
    print(f"per SLURM job, seconds (sum over {len(parts)} jobs / mean): "
          + ", ".join(f"{c} {parts[c].sum():.0f} / {parts[c].mean():.1f}"
                      for c in ("queue_start", "in_job", "rule_s", "detect")))
    print("  queue_start: submission -> Snakemake starts in the job; in_job - rule_s: Snakemake's own "
          "start-up inside the job; detect: job end -> noticed by the status poll")


if __name__ == "__main__":
    main(sys.argv[1:])
