"""inferline: a production ML inference stack for any PyTorch model.

One distribution, one namespace. The stages live in the repository's top-level folders (the design card fixes
them) and are installed as subpackages of this package through setuptools' ``package-dir`` mapping:

    inferline.features   features/     pipeline specs, validation, the compiled feature contract
    inferline.training   training/     the training loop for any module that follows the forward contract
    inferline.export     export/       ONNX export, parity gate, Triton configs, releases and the registry
    inferline.serving    serving/      the local Triton, the edge gateway, the typed client
    inferline.batch      batch/        the Dask batch job
    inferline.monitor    monitor/      metrics, drift, alerts, rollback
    inferline.benchmarks benchmarks/   the benchmark suite

The one command is ``inferline`` (``inferline --help``); ``python -m inferline.<stage>`` runs one stage's CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"

STAGES = ("features", "training", "export", "serving", "batch", "monitor", "benchmarks")

__all__ = ["STAGES", "__version__"]
