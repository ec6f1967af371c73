"""How much the torch models' numbers move with the machine: the same graph, config and seed trained
under different CPU kernels (torch's ATEN_CPU_CAPABILITY: what this CPU supports, avx2, or the
plain default kernels, i.e. what an older CPU would run) and thread counts, each in a fresh process.

    python bench/reproducibility.py [--models gat mlp] [--seeds 0 1 2]

Prints, per model, setting and seed, the test macro-F1 and balanced accuracy, the largest absolute
difference of any cell's class probabilities from the reference setting (this CPU's own kernels,
1 thread: what a rule with ``threads: 1`` runs here) and how many cells' predicted class differs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [("native", 1), ("native", 2), ("avx2", 1), ("default", 1)]  # native: what torch picks here
CHILD = """
import sys, json, numpy as np, torch
sys.path.insert(0, {src!r})
torch.set_num_threads({threads})
from cellgnn.graph import load_graph
from cellgnn.train import train_model
g = load_graph({graph!r})
r = train_model(g, {model!r}, {{"max_epochs": 300, "patience": 30}}, {seed})
np.save({out!r}, r.proba)
print(json.dumps({{"capability": torch.backends.cpu.get_cpu_capability(), **r.metrics, "best_epoch": r.best_epoch}}))
"""


def build_graph(folder: Path) -> Path:
    """The default config's data (3,500 simulated cells) and its donors graph, fold 0."""
    import yaml

    sys.path.insert(0, str(ROOT / "src"))
    from cellgnn.config import validate_config
    from cellgnn.data import simulate
    from cellgnn.graph import build_graph as build, save_graph
    from cellgnn.preprocess import preprocess

    cfg = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    adata, _ = preprocess(simulate(**cfg["data"]["simulate"]), cfg["preprocess"])
    path = folder / "fold0.pt"
    save_graph(build(adata, cfg["graph"], "donor_cv/fold0", cfg["seed"]), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["gat", "mlp"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        graph = build_graph(Path(tmp))
        print("model  seed  kernels  threads  ran_on    macro_f1  bal_acc  best_epoch  max|dp|    classes_differ")
        for model in args.models:
            for seed in args.seeds:
                ref = None
                for cap, threads in SETTINGS:
                    out = Path(tmp) / f"{model}_{seed}_{cap}_{threads}.npy"
                    code = CHILD.format(src=str(ROOT / "src"), threads=threads, graph=str(graph), model=model,
                                        seed=seed, out=str(out))
                    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
                    env.pop("ATEN_CPU_CAPABILITY", None)
                    if cap != "native":
                        env["ATEN_CPU_CAPABILITY"] = cap
                    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                         check=True)
                    m = json.loads(res.stdout.strip().splitlines()[-1])
                    p = np.load(out)
                    ref = p if ref is None else ref
                    diff = float(np.abs(p - ref).max())
                    changed = int((p.argmax(1) != ref.argmax(1)).sum())
                    print(f"{model:5}  {seed:4}  {cap:7}  {threads:7}  {m['capability']:8}  {m['macro_f1']:.4f}    "
                          f"{m['balanced_accuracy']:.4f}   {m['best_epoch']:10}  {diff:.2e}  {changed} cells")


if __name__ == "__main__":
    main()
