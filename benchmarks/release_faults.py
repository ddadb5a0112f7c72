"""Faults injected into a published release, to measure and test what catches them: a release that sleeps per batch
(slower serving) and one whose head is flipped (its predictions drift from the release it copies).

Each edits the release's own copy of the fused model's ``model.py`` (``<repository>/<p>/<N>/model.py``), which the
release manifest does not cover (the code is the serving backend's, copied per release), so the release still
loads and answers; nothing else of the release changes.
"""

from __future__ import annotations

from pathlib import Path

from inferline.release.registry import model_names

__all__ = ["flip_head", "slow_down"]


def _model_py(repository: Path, pipeline: str, version: int) -> Path:
    return Path(repository) / model_names(pipeline)["ensemble"] / str(version) / "model.py"


def slow_down(repository: Path, version: int, sleep_s: float, pipeline: str = "fraud") -> None:
    """Release ``version`` sleeps ``sleep_s`` before every batch it executes."""
    path = _model_py(repository, pipeline, version)
    text = path.read_text()
    marker = "    def execute(self, requests"
    if marker not in text:
        raise RuntimeError(f"{path}: the fused model's execute() moved; update benchmarks/release_faults.py")
    head, tail = text.split(marker, 1)
    signature, body = tail.split("\n", 1)
    sleep = f"        import time\n\n        time.sleep({sleep_s})  # injected\n"
    path.write_text(f"{head}{marker}{signature}\n{sleep}{body}")


def flip_head(repository: Path, version: int, pipeline: str = "fraud") -> None:
    """Release ``version`` (a classifier) answers every row with its class probabilities reversed and the predicted
    class flipped (``1 - class``): a shuffled head."""
    path = _model_py(repository, pipeline, version)
    text = path.read_text()
    marker = "        status_out = np.array("
    if marker not in text:
        raise RuntimeError(f"{path}: the fused model's _score() moved; update benchmarks/release_faults.py")
    flip = (
        "        p, c = self.outputs.index('probabilities'), self.outputs.index('predicted_class')\n"
        "        scored[p] = scored[p][:, ::-1].copy()\n"
        "        scored[c] = (1 - scored[c]).astype(scored[c].dtype)  # injected\n"
    )
    path.write_text(text.replace(marker, flip + marker, 1))
