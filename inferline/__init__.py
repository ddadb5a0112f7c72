"""inferline: a production ML inference stack for any PyTorch model.

One distribution, one namespace. The stages live in the repository's top-level folders (the design card fixes
them); ``inferline/<stage>`` is a relative symlink to each, so they import as subpackages of this package:

    inferline.features   features/     pipeline specs, validation, the compiled feature contract
    inferline.training   training/     the training loop for any module that follows the forward contract
    inferline.export     export/       ONNX export, parity and quality gates, Triton configs, publishing a release
    inferline.serving    serving/      the local Triton, its supervisor, the edge gateway, the typed client
    inferline.batch      batch/        the Dask batch job
    inferline.monitor    monitor/      metrics, drift, alerts rules, rollback
    inferline.benchmarks benchmarks/   the benchmark suite

Below them, real folders of this package: ``inferline.core`` (what every stage shares; it imports no stage) and
``inferline.release`` (registry, resolution, activation and switching of releases). Imports point one way
(``make lint`` runs import-linter's layers contract from pyproject.toml).

The one command is ``inferline`` (``inferline --help``); ``python -m inferline.<stage>`` runs one stage's CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"

STAGES = ("features", "training", "export", "serving", "batch", "monitor", "benchmarks")

__all__ = ["STAGES", "__version__"]
