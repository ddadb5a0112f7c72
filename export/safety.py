"""Hostile model files are refused before anything is staged.

A release is one self-contained ``model.onnx``: an ONNX file may point its tensors at external data files, and a
crafted one points them at ``../../etc/passwd``, an absolute path or a symlink, which onnxruntime (and Triton's
onnxruntime backend) would read. inferline refuses every external-data reference, naming the tensor and where it
points, and refuses files that are symlinks, not ONNX protobuf (truncated, garbage) or over the size limit.
Checkpoints are loaded with ``torch.load(weights_only=True)`` only; a checkpoint that needs pickled code is
refused with that reason and never retried another way.
"""

from __future__ import annotations

import os
from pathlib import Path

from inferline.core.errors import UserError

__all__ = ["MAX_MODEL_BYTES", "UnsafeModel", "check_onnx_file"]

MAX_MODEL_BYTES = 512 * 2**20


class UnsafeModel(UserError, ValueError):
    """A model file inferline will not publish or load: a symlink or not a regular file, larger than a release's
    limit, not a readable ONNX model (truncated, no graph nodes), or one that keeps tensor data in external files
    (a release is one self-contained ONNX file)."""


def _escapes(location: str, root: Path) -> str | None:
    if os.path.isabs(location):
        return "an absolute path"
    if (root / location).is_symlink():
        return f"a symlink (to {os.readlink(root / location)})"
    target = (root / location).resolve()
    if not target.is_relative_to(root.resolve()):
        return f"a path outside the model directory ({target})"
    return None


def check_onnx_file(path: Path, max_bytes: int = MAX_MODEL_BYTES) -> None:
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    path = Path(path)
    if path.is_symlink():
        raise UnsafeModel(f"{path} is a symlink (to {os.readlink(path)}); publish the file itself")
    if not path.is_file():
        raise UnsafeModel(f"{path} is not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise UnsafeModel(
            f"{path} is {size:,} bytes, over the {max_bytes:,}-byte limit for a release; check the file, or raise "
            "the limit (publish(max_model_bytes=...)) if such a model is intended"
        )
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise UnsafeModel(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); truncated?") from exc
    if not model.graph.node:
        raise UnsafeModel(f"{path} holds no graph nodes: not a model (truncated or not ONNX)")
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        why = _escapes(location, path.parent)
        raise UnsafeModel(
            f"{path}: tensor {tensor.name!r} keeps its data in an external file {location!r}"
            + (f", {why}" if why else "")
            + "; releases are single self-contained ONNX files: re-export with the data embedded"
        )
