"""Pretraining benchmark: wall time and peak memory of one pretraining epoch and of the embedding.

Simulated counts (``bench/scale.py``'s ``simulate_sparse``: N cells x 2,000 genes, ~150 non-zeros per
cell, seed 0); the schema's default pretrain settings (16-dim tokens, 8 latents, 1 self-attention
block, batch 128, mask 15%, at most 256 visible genes per cell in training), one epoch (over every
cell, or ``--cells-per-epoch`` of them), then the embedding of every cell. Each size
runs in its own process; printed per size: seconds and peak resident memory of each step, and the
time per 1,000 cells, with the ratio of the largest to the smallest size (1 = linear in cells).

    python bench/pretrain.py --cells 10000 100000 --threads 2 --cells-per-epoch 10000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def run_one(n: int, threads: int, device: str, nnz: int, per_epoch: int | None) -> dict:
    import torch

    from cellgnn.config import settings
    from cellgnn.pretrain import embed, fit_pretrain
    from cellgnn.utils import get_device
    from scale import PeakRSS, simulate_sparse

    torch.set_num_threads(threads)
    dev = get_device(device)
    counts, _, _ = simulate_sparse(n, 2000, nnz_per_cell=nnz, seed=0)
    cfg = settings("pretrain", {"epochs": 1, "cells_per_epoch": per_epoch})
    rss = PeakRSS()
    out = {"cells": n, "genes": counts.shape[1], "nnz_per_cell": counts.nnz / n, "device": str(dev),
           "threads": threads, "epoch_cells": min(n, per_epoch or n)}
    rss.reset()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    res = fit_pretrain(counts, cfg, device=dev)
    out["epoch_s"] = time.perf_counter() - t
    out["epoch_peak_gib"] = rss.peak / 2**30
    out["loss"] = res.history[-1]["loss"]
    rss.reset()
    t = time.perf_counter()
    emb = embed(res.model, counts, cfg["embed_batch_size"], cfg["target_sum"], dev)
    out["embed_s"] = time.perf_counter() - t
    out["embed_peak_gib"] = rss.peak / 2**30
    out["embedding_dims"] = emb.shape[1]
    if dev.type == "cuda":
        out["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    rss.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--nnz", type=int, default=150, help="mean non-zero genes per cell")
    ap.add_argument("--cells-per-epoch", type=int, default=None,
                    help="cells the one epoch draws (default: all); the embedding always covers every cell")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.threads, args.device, args.nnz, args.cells_per_epoch)))
        return
    rows = []
    for n in args.cells:
        cmd = [sys.executable, __file__, "--one", str(n), "--threads", str(args.threads), "--device", args.device,
               "--nnz", str(args.nnz)] + (["--cells-per-epoch", str(args.cells_per_epoch)] if args.cells_per_epoch else [])
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['cells']:>9,} cells x {r['genes']} genes ({r['nnz_per_cell']:.0f} non-zeros/cell, {r['device']}, "
              f"{r['threads']} threads): epoch over {r['epoch_cells']:,} cells {r['epoch_s']:.1f} s "
              f"({1000 * r['epoch_s'] / r['epoch_cells']:.2f} s per 1k cells), peak {r['epoch_peak_gib']:.2f} GiB; embedding {r['embed_s']:.1f} s, peak "
              f"{r['embed_peak_gib']:.2f} GiB; masked-count NLL after 1 epoch {r['loss']:.4f}", flush=True)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        per = lambda r, k: r[k] / r["epoch_cells" if k == "epoch_s" else "cells"]  # noqa: E731
        print(f"time per cell, {b['cells']:,} vs {a['cells']:,} cells: epoch x{per(b, 'epoch_s') / per(a, 'epoch_s'):.2f}, "
              f"embedding x{per(b, 'embed_s') / per(a, 'embed_s'):.2f} (1 = linear); peak memory "
              f"x{b['epoch_peak_gib'] / a['epoch_peak_gib']:.2f} for x{b['cells'] / a['cells']:.0f} cells")
    out = ROOT / "bench" / "out" / "pretrain.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
