"""cellgnn: graph neural networks that predict the disease state of single cells.

Stages (one module each): ``data`` → ``preprocess`` → ``graph`` → ``edge_features``
→ ``train`` → ``augment`` → ``explain`` → ``plots`` → ``results``. See CONTRIBUTING.md for the
file contracts between stages.

The Python API (:mod:`cellgnn.api`, scanpy's style) is loaded on first use, so ``import cellgnn``
stays cheap: ``cellgnn.pp.prepare``, ``cellgnn.tl.build_graph`` / ``fit`` / ``predict`` /
``explain`` / ``neighbors``, ``cellgnn.get.attributions``, ``cellgnn.write_results``.
"""

__version__ = "0.1.0"

_API = ("pp", "tl", "get", "write_results")


def __getattr__(name: str):
    if name in _API:  # loaded on first use only (PEP 562), so rule scripts never import the API
        import importlib

        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module 'cellgnn' has no attribute '{name}'")


def __dir__():
    return sorted([*globals(), *_API])
