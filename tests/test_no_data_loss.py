"""No data loss: outputs are renamed into place whole, and rules write only their own folders."""
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cellgnn.io import atomic_path, write_json
from test_workflow import TINY, snakemake

ROOT = Path(__file__).resolve().parents[1]


def test_failed_writer_leaves_old_file_and_no_temp(tmp_path):
    out = tmp_path / "metrics.json"
    write_json({"v": 1}, out)
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text('{"v": 2, "half')
        raise RuntimeError("writer crashed")
    assert out.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_killed_writer_never_leaves_a_half_file(tmp_path):
    """SIGKILL in the middle of a write: the destination is absent (or the old one), never partial."""
    out = tmp_path / "big.csv"
    code = (f"import os, signal, sys; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
            "from cellgnn.io import atomic_path\n"
            f"with atomic_path({str(out)!r}) as tmp:\n"
            "    with open(tmp, 'w') as fh:\n"
            "        fh.write('a,b\\n' * 100000); fh.flush()\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n")
    res = subprocess.run([sys.executable, "-c", code])
    assert res.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = list(tmp_path.iterdir())  # the hidden temp name, which no rule declares or reads
    assert all(p.name.startswith(".big.") and ".tmp" in p.name for p in leftovers)


def test_rules_write_only_their_own_folders(tmp_path):
    """Dry run of the whole tiny workflow: every output under results/<dataset>/, logs under
    logs/<dataset>/, benchmarks under benchmarks/<dataset>/ (so nothing under config/, resources/
    (downloads) or the user's input files), and no path written by two jobs."""
    out = snakemake("-n", "--forceall", "--configfile", str(TINY), "--directory", str(tmp_path)).stdout
    written = Counter()
    for line in out.splitlines():
        line = line.strip()
        for kind, root in (("output:", "results/tiny/"), ("log:", "logs/tiny/"), ("benchmark:", "benchmarks/tiny/")):
            if line.startswith(kind):
                for path in line[len(kind):].split(","):
                    path = path.strip()
                    assert path.startswith(root), f"{kind} {path} outside {root}"
                    written[path] += 1
    assert written["results/tiny/raw.h5ad"] == 1 and written["results/tiny/metrics/models.csv"] == 1
    assert [p for p, n in written.items() if n > 1] == []
    assert len(written) > 50, out[-2000:]
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_outputs_follow_the_umask(tmp_path):
    """A lab sharing a project group reads the results: files are created with the user's umask,
    not the temporary file's 0600."""
    import os
    import stat

    old = os.umask(0o002)
    try:
        write_json({"v": 1}, tmp_path / "shared.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o664
