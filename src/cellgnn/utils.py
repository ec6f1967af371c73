"""Seeding, device choice and logging shared by every stage."""

from __future__ import annotations

import logging
import os
import random
import sys

import numpy as np

LOG = logging.getLogger("cellgnn")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a NumPy Generator for local use.

    torch is put in deterministic mode so that the same config and seed give the
    same numbers on CPU (on CUDA, scatter-based GNN kernels stay non-deterministic;
    see README "Reproducibility").
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return np.random.default_rng(seed)


def get_device(preference: str = "auto", gpus: int = 1):
    """Return ``torch.device``: CUDA when visible and ``preference`` is ``auto``/``cuda``, else CPU.

    gpus: GPUs the job asks for; with ``preference="cuda"`` fewer visible GPUs is an error.
    Logs the choice so that every rule's log says where it ran.
    """
    import torch

    from .errors import CellgnnInputError

    if preference not in {"auto", "cpu", "cuda"}:
        raise CellgnnInputError(f"unknown device '{preference}'", field="device",
                                fix="use one of auto, cpu, cuda")
    if preference == "cuda" and not torch.cuda.is_available():
        raise CellgnnInputError("device 'cuda' asked for but no GPU is visible", field="device",
                                fix="set device: auto (uses CUDA when present) or cpu")
    if preference == "cuda" and torch.cuda.device_count() < gpus:
        raise CellgnnInputError(f"{gpus} GPUs asked for but only {torch.cuda.device_count()} visible",
                                field="device", fix=f"ask for at most {torch.cuda.device_count()} GPU(s) "
                                "(resources gpu=...), or set device: auto")
    use_cuda = preference != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    name = torch.cuda.get_device_name(0) if use_cuda else f"CPU ({torch.get_num_threads()} threads)"
    LOG.info("device: %s (%s)", device, name)
    return device


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> None:
    """Send cellgnn's log (and warnings) to ``log_path`` (a rule's log) or stderr."""
    handlers: list[logging.Handler] = []
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a Slurm allocation), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(n: int) -> None:
    """Refuse a job asking for more threads than this machine (or allocation) has CPUs."""
    from .errors import CellgnnInputError

    have = available_cpus()
    if int(n) > have:
        raise CellgnnInputError(f"{int(n)} threads asked for but only {have} CPUs are available", field="threads",
                                fix=f"run with --cores {have} or fewer (Snakemake scales each rule's threads "
                                    "down to --cores)")


def set_threads(n: int) -> None:
    """Limit torch's intra-op threads and numba's parallel kernels to the rule's ``threads``.

    Snakemake caps OpenMP and BLAS through the environment, but not numba, whose pool has one
    thread per CPU. Its OpenMP layer (scanpy's Wilcoxon test, cellgnn's own kernels) would then
    run every core and also raise torch's OpenMP team to that size for the rest of the job, so a
    one-thread job beside others would fight them for cores.
    """
    import torch

    n = max(1, int(n))
    torch.set_num_threads(n)
    numba = sys.modules.get("numba")
    if numba is None:
        os.environ["NUMBA_NUM_THREADS"] = str(n)  # its pool size, read when numba is imported
    else:  # the pool size is fixed (numba refuses a changed NUMBA_NUM_THREADS): use n of its threads
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def run_rule(main, snakemake) -> None:
    """Run a rule script's ``main(snakemake)`` with its log set up.

    cellgnn's log, warnings, progress bars and tracebacks go to ``snakemake.log[0]``. Bad
    input (:class:`~cellgnn.errors.CellgnnInputError`) ends the job with its one-line
    message (``cellgnn: <file>: field '<field>': <problem>. Fix: <fix>``) instead of a traceback;
    Snakemake then removes the job's outputs, and the run's failure report
    (:func:`~cellgnn.errors.failure_report`) repeats the line last.
    """
    from .errors import CellgnnInputError

    log_path = snakemake.log[0]
    setup_logging(log_path)
    sys.stderr = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    try:
        check_threads(getattr(snakemake, "threads", 1))
        set_threads(getattr(snakemake, "threads", 1))
        main(snakemake)
    except CellgnnInputError as err:
        message = f"cellgnn: {err}"
        sys.stderr.write(message + "\n")  # the one line of the rule log that the run's failure report repeats
        sys.stderr.flush()
        raise SystemExit(1) from None
