"""inferline export: ONNX export, parity gate, quality gate, Triton configs and the atomic publish of a release.

Names are imported on first use (PEP 562), so ``inferline export --help`` and a mistake on its command line answer
without importing torch. Reading, resolving and switching releases is ``inferline.release``'s job, without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferline.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from inferline.export.config import pipeline_configs, to_json, to_pbtxt
    from inferline.export.loadcheck import LoadCheckReport, ReleaseUnloadable, check_release_loads
    from inferline.export.onnx_export import export_onnx
    from inferline.export.parity import ParityGateFailed, ParityReport, run_parity_gate
    from inferline.export.publish import PublishResult, publish

__getattr__, __all__ = lazy_attributes(
    __name__,
    {
        "LoadCheckReport": "loadcheck",
        "ParityGateFailed": "parity",
        "ParityReport": "parity",
        "PublishResult": "publish",
        "ReleaseUnloadable": "loadcheck",
        "check_release_loads": "loadcheck",
        "export_onnx": "onnx_export",
        "pipeline_configs": "config",
        "publish": "publish",
        "run_parity_gate": "parity",
        "to_json": "config",
        "to_pbtxt": "config",
    },
)
