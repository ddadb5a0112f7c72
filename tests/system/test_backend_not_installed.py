"""The feature backends' not-installed path, checked in a fresh interpreter (a subprocess) so nothing this test
process imported or cached changes the answer; the in-process feature tests are in tests/unit/test_features.py."""

from __future__ import annotations

import json
import subprocess
import sys

NOT_INSTALLED = """
import json, sys
sys.modules["cudf"] = sys.modules["cupy"] = None
from inferline.features.backend import BackendUnavailable, get_backend, gpu_available
import inferline.batch, inferline.features.state
out = {"gpu_available": gpu_available(), "auto": get_backend("auto").name}
try:
    get_backend("cudf")
except BackendUnavailable as exc:
    out["error"], out["cause"] = str(exc), type(exc.__cause__).__name__
out["gpu_modules_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("cudf", "cupy") and sys.modules[m])
print(json.dumps(out))
"""


def test_backend_dispatch_without_the_gpu_libraries() -> None:
    """The not-installed path, in a fresh process so nothing of this one (imports, cached backends) changes."""
    done = subprocess.run([sys.executable, "-c", NOT_INSTALLED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["gpu_available"] is False and out["auto"] == "pandas" and out["gpu_modules_loaded"] == []
    assert "backend 'cudf' needs cudf and cupy, which are not installed" in out["error"]
    assert "pip install 'inferline[gpu]'" in out["error"] and "--backend pandas" in out["error"]
    assert out["cause"] == "ModuleNotFoundError", "the ImportError is chained, not hidden"
