"""A job's thread count holds for every library it runs: torch, and numba's parallel kernels
(scanpy's Wilcoxon test among them), whose OpenMP pool would otherwise use every CPU and widen
torch's OpenMP team with it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, sys
sys.path.insert(0, {src!r})
{pre}
from cellgnn.utils import set_threads
set_threads(1)
import anndata as ad, numba, numpy as np, scanpy as sc, torch
a = torch.ones(300, 300)
a @ a
rng = np.random.default_rng(0)
adata = ad.AnnData(rng.random((400, 200), dtype=np.float32))
adata.obs["group"] = rng.choice(["a", "b"], 400)
sc.tl.rank_genes_groups(adata, "group", method="wilcoxon")
a @ a


@numba.njit(parallel=True)
def compiled_after_set_threads(x):  # numba rereads its settings for every new compilation
    total = 0.0
    for i in numba.prange(x.shape[0]):
        total += x[i]
    return total


compiled_after_set_threads(np.ones(1000))
print(json.dumps({{"torch": torch.get_num_threads(), "numba": numba.get_num_threads(),
                   "os_threads": len(os.listdir("/proc/self/task"))}}))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: every pool has one thread anyway")
@pytest.mark.parametrize("numba_first", [False, True], ids=["numba-imported-after", "numba-imported-before"])
def test_one_thread_job_stays_on_one_thread(numba_first):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["OMP_NUM_THREADS"] = "1"  # what Snakemake sets for a one-thread job
    code = CHILD.format(src=str(ROOT / "src"), pre="import numba" if numba_first else "")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["torch"] == 1 and counts["numba"] == 1, counts
    assert counts["os_threads"] <= 2, counts  # the main thread (and at most tqdm's monitor)
