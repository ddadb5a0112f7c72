"""onnxruntime sessions with one provider choice for every stage (parity gate, Triton fused model, batch job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

__all__ = ["Device", "choose_providers", "onnx_session"]

Device = Literal["auto", "cpu", "cuda"]


def choose_providers(device: Device, available: list[str], tensorrt: bool = False) -> list[Any]:
    """Execution providers in priority order. ``cuda`` without a CUDA provider is an error, ``auto`` falls back."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise RuntimeError(
            f"device 'cuda' requested but onnxruntime offers only {available}; install the GPU extra "
            "(pip install 'inferline[gpu]', which brings onnxruntime-gpu for CUDA 12) on a machine with an "
            "NVIDIA GPU, or use device 'cpu'"
        )
    providers: list[Any] = []
    if has_cuda:
        if tensorrt and "TensorrtExecutionProvider" in available:
            providers.append(("TensorrtExecutionProvider", {"trt_fp16_enable": False}))
        providers.append(("CUDAExecutionProvider", {"cudnn_conv_algo_search": "DEFAULT"}))
    providers.append("CPUExecutionProvider")
    return providers


def onnx_session(path: Path | str, device: Device = "cpu", threads: int = 1, tensorrt: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = choose_providers(device, ort.get_available_providers(), tensorrt)
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)
