"""The workflow on a real (one-node) SLURM cluster through Snakemake's slurm executor.

Runs the tiny end-to-end config with profiles/slurm (+ test overrides: partition, no
conda, squeue status checks) and checks that every non-local rule ran as a SLURM job,
GPU rules were submitted with a GPU (``--gpus``, via the node's gpu GRES), the metrics
tables equal a local run's, failures (unknown partition, too much memory, a job killed
for exceeding its memory) reach the user with the SLURM log path, failed jobs are
retried with more memory, and reruns compute only what is missing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slurmtools import (
    ROOT,
    Cluster,
    Run,
    copy_workflow,
    make_run,
    make_test_profile,
    mtimes,
    run_snakemake,
    snakemake_cmd,
)

pytestmark = pytest.mark.slurm

TINY_CONFIG = "tests/data/tiny.yaml"  # relative to the workflow copy
# a GPU rule with non-local rules upstream, used for the failure cases, and one of its
# outputs as the target (the failure cases need not run the whole workflow)
FAIL_RULE = "train"
FAIL_TARGET = "results/tiny/models/cells/logreg/seed0/metrics.json"
# an early rule whose job needs more than 350 MB (python + scanpy), for the OOM retry
OOM_RULE = "preprocess"
# the run interrupted with Ctrl-C: one split's models (data, preprocess, graph, then one train job
# fitting logreg and gat with seeds 0 and 1)
INTERRUPT_TARGETS = [f"results/tiny/models/cells/{m}/seed{s}/metrics.json" for m in ("logreg", "gat") for s in (0, 1)]


def dataset() -> str:
    return yaml.safe_load((ROOT / TINY_CONFIG).read_text())["dataset"]


def metrics_tables(workdir: Path) -> dict[str, pd.DataFrame]:
    """Every metrics table the run wrote (results/<dataset>/metrics/*.csv)."""
    files = sorted((workdir / "results" / dataset() / "metrics").glob("*.csv"))
    return {f.name: pd.read_csv(f) for f in files}


def slurm_args(cluster: Cluster, workdir: Path, set_resources: dict | None = None,
               targets: list[str] = ()) -> list[str]:
    profile = make_test_profile(cluster, workdir / "test-profile" / "config.yaml", set_resources)
    return [*targets, "--workflow-profile", str(profile), "--configfile", TINY_CONFIG]


def explain(run: Run) -> str:
    return f"snakemake exited {run.returncode}; output tail:\n{run.output[-6000:]}"


@pytest.fixture(scope="module")
def local_run(scratch) -> tuple[Path, Run]:
    workdir = copy_workflow(scratch("local"))
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    run = run_snakemake(workdir, ["--workflow-profile", "profiles/default", "--cores", "2",
                                  "--configfile", TINY_CONFIG], env)
    assert run.returncode == 0, explain(run)
    return workdir, run


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster: Cluster, scratch) -> tuple[Path, Run]:
    workdir = copy_workflow(scratch("slurm"))
    run = run_snakemake(workdir, slurm_args(slurm_cluster, workdir), slurm_cluster.env)
    assert run.returncode == 0, explain(run)
    return workdir, run


def test_every_nonlocal_rule_ran_as_a_slurm_job(slurm_run, slurm_cluster: Cluster):
    workdir, run = slurm_run
    remote = {jid: j for jid, j in run.jobs.items() if not j["local"]}
    assert remote, "no job ran on the cluster"
    submitted = {jid for jid, _, _ in run.submissions}
    assert submitted == set(remote), (
        f"not submitted: {[remote[j]['rule'] for j in set(remote) - submitted]}; "
        f"local jobs submitted: {[run.jobs[j]['rule'] for j in submitted - set(remote)]}"
    )
    known = slurm_cluster.squeue("State", "tres-per-job")
    for jid, slurm_id, log in run.submissions:
        rule = run.jobs[jid]["rule"]
        # the SLURM log is named after the SLURM job id and holds that rule's job
        assert log.name == f"{slurm_id}.log" and log.is_relative_to(workdir / ".snakemake" / "slurm_logs")
        assert log.exists(), f"missing SLURM log {log}"
        assert re.search(rf"^(local)?rule {rule}:$", log.read_text(), re.M), f"{log} is not rule {rule}'s"
        assert known[slurm_id]["State"] == "COMPLETED", (rule, known[slurm_id])


def test_gpu_rules_asked_slurm_for_a_gpu(slurm_run, slurm_cluster: Cluster):
    _, run = slurm_run
    known = slurm_cluster.squeue("tres-per-job")
    gpu_jobs = 0
    for jid, slurm_id, _ in run.submissions:
        wants_gpu = re.search(r"\bgpu=1\b", run.jobs[jid]["resources"]) is not None
        tres = known[slurm_id]["tres-per-job"]
        assert ("gpu:1" in tres) == wants_gpu, (run.jobs[jid]["rule"], run.jobs[jid]["resources"], tres)
        gpu_jobs += wants_gpu
    assert gpu_jobs > 0, "no GPU rule in the run: the --gpus path was not exercised"


def test_slurm_metrics_equal_local_metrics(slurm_run, local_run):
    (slurm_dir, _), (local_dir, _) = slurm_run, local_run
    local, remote = metrics_tables(local_dir), metrics_tables(slurm_dir)
    assert local, "the local run wrote no metrics table"
    assert remote.keys() == local.keys()
    for name in local:
        pd.testing.assert_frame_equal(remote[name], local[name], check_exact=False, rtol=1e-6, atol=1e-9)


def test_bad_partition_and_memory_fail_clearly_and_rerun_resumes(slurm_cluster: Cluster, scratch):
    workdir = copy_workflow(scratch("wf"))
    slurm_logs = workdir / ".snakemake" / "slurm_logs" / f"rule_{FAIL_RULE}"

    # 1. a partition that does not exist: upstream rules finish, FAIL_RULE is refused
    bad = run_snakemake(workdir, slurm_args(slurm_cluster, workdir,
                                            {FAIL_RULE: {"slurm_partition": "no_such_partition"}},
                                            [FAIL_TARGET]),
                        slurm_cluster.env)
    assert bad.returncode != 0
    assert "Invalid partition name specified" in bad.output, explain(bad)
    assert f"Error in rule {FAIL_RULE}" in bad.output, explain(bad)
    assert str(slurm_logs) in bad.output, "the SLURM log path of the refused job is not shown"
    finished = bad.finished_outputs()
    assert finished, "no upstream job finished before the failure"
    before = mtimes(workdir, finished)

    # 2. more memory than the node has: refused at submission, nothing finished is redone
    huge = run_snakemake(workdir, slurm_args(slurm_cluster, workdir,
                                             {FAIL_RULE: {"mem_mb": slurm_cluster.mem_mb * 10}},
                                             [FAIL_TARGET]),
                         slurm_cluster.env)
    assert huge.returncode != 0
    assert re.search(r"Memory specification can not be satisfied|Requested node configuration is not available",
                     huge.output), explain(huge)
    assert f"Error in rule {FAIL_RULE}" in huge.output and str(slurm_logs) in huge.output
    assert not huge.outputs() & finished, f"rerun redid {sorted(huge.outputs() & finished)}"
    assert mtimes(workdir, finished) == before, "outputs of finished jobs were rewritten"

    # 3. fixed profile: completes, redoing nothing that had finished
    good = run_snakemake(workdir, slurm_args(slurm_cluster, workdir, targets=[FAIL_TARGET]), slurm_cluster.env)
    assert good.returncode == 0, explain(good)
    assert good.rules_run(local=False) == {FAIL_RULE}
    assert not good.outputs() & finished, f"recomputed after the failure: {sorted(good.outputs() & finished)}"
    assert mtimes(workdir, finished) == before


def test_job_killed_for_memory_is_retried_with_more(slurm_cluster: Cluster, scratch):
    workdir = copy_workflow(scratch("wf"))
    # attempt 1 gets 350 MB, too little for a Python job that loads the data stack;
    # the node kills it (OverMemoryKill) and the retry gets 8 GB
    args = slurm_args(slurm_cluster, workdir,
                      {OOM_RULE: {"mem_mb": "350 if attempt == 1 else 8000"}})
    run = run_snakemake(workdir, [*args, "--until", OOM_RULE], slurm_cluster.env)
    assert run.returncode == 0, explain(run)
    attempts = [(sid, log) for jid, sid, log in run.submissions if run.jobs[jid]["rule"] == OOM_RULE]
    assert len(attempts) == 2, f"expected a failed and a retried job of {OOM_RULE}: {attempts}"
    known = slurm_cluster.squeue("State", "MinMemory")
    (first, first_log), (second, _) = attempts
    assert known[first]["State"] in {"FAILED", "OUT_OF_MEMORY", "CANCELLED"}, known[first]
    assert known[second]["State"] == "COMPLETED"
    assert known[first]["MinMemory"] == "350M" and known[second]["MinMemory"] == "8000M"
    # the failure named the SLURM log, and that log says why
    assert str(first_log) in run.output
    assert "exceeded memory limit" in first_log.read_text()


def _default_sigint() -> None:
    """Let the child take Ctrl-C: a shell that starts jobs in the background ignores SIGINT
    in them, and Python keeps an inherited SIG_IGN instead of raising KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_run_resumes_with_only_missing_jobs(slurm_cluster: Cluster, scratch):
    workdir = copy_workflow(scratch("wf"))
    args = slurm_args(slurm_cluster, workdir, targets=INTERRUPT_TARGETS)
    t0 = time.perf_counter()
    proc = subprocess.Popen(snakemake_cmd(workdir, args), cwd=workdir, env=slurm_cluster.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)
    # Ctrl-C once 3 jobs have finished (data, preprocess, graph) and the next batch of jobs is
    # on SLURM. Wait until every job of that batch is submitted: a Ctrl-C in the middle of a
    # submission burst cancels only what was registered so far, and snakemake goes on to
    # submit the rest (a limitation the README's cluster section documents).
    lines: list[str] = []
    finished, batch, submitted = 0, 0, 0
    interrupted = False
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        finished += line.startswith("Finished jobid")
        if finished < 3:
            continue
        if m := re.match(r"Execute (\d+) jobs", line):
            batch, submitted = int(m.group(1)), 0
        submitted += "has been submitted with SLURM jobid" in line
        if batch and submitted == batch:
            time.sleep(2)  # let snakemake register the last submission as active
            # Ctrl-C reaches the snakemake process; not its whole group, where it could also
            # kill an sbatch that snakemake is still running and turn the cancel into a crash
            os.kill(proc.pid, signal.SIGINT)
            interrupted = True
            break
    rest, _ = proc.communicate(timeout=400)
    first = make_run(proc.returncode, "".join(lines) + (rest or ""), time.perf_counter() - t0)
    assert interrupted, f"run ended before it could be interrupted:\n{first.output[-4000:]}"
    assert first.returncode != 0, "the interrupted run claims success"
    # Ctrl-C cancelled the run's SLURM jobs that had not finished
    finished_ids = {int(n) for n in re.findall(r"^Finished jobid: (\d+)", first.output, re.M)}
    running = [s for j, s, _ in first.submissions if j not in finished_ids]
    assert running, "no SLURM job was pending or running at Ctrl-C"
    deadline = time.time() + 300  # a loaded node can take minutes to kill a cancelled job
    active = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING"}
    while any(slurm_cluster.squeue("State").get(s, {}).get("State") in active for s in running):
        assert time.time() < deadline, "SLURM jobs still running 300 s after Ctrl-C"
        time.sleep(1)
    states = slurm_cluster.squeue("State")
    assert any(states[s]["State"] == "CANCELLED" for s in running), \
        f"{ {s: states[s] for s in running} }\n{explain(first)}"
    done = first.finished_outputs()
    assert done
    before = mtimes(workdir, done)

    resumed = run_snakemake(workdir, args, slurm_cluster.env)
    assert resumed.returncode == 0, explain(resumed)
    assert resumed.outputs(), "the resumed run had nothing left to do"
    assert not resumed.outputs() & done, f"recomputed: {sorted(resumed.outputs() & done)}"
    assert mtimes(workdir, done) == before
    # and now everything is there: a dry run finds nothing to do
    dry = run_snakemake(workdir, [*args, "--dry-run"], slurm_cluster.env)
    assert dry.returncode == 0 and "Nothing to be done" in dry.output, explain(dry)
