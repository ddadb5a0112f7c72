"""make gpu-check: show, where an NVIDIA GPU is lent, that inferline's GPU paths work, in under 5 minutes.

Three checks, each reported as passed, failed or not run (with the reason):

1. ``kernels``: every feature kernel (``inferline.features.kernels.KERNELS``), every rule vector lowering that
   applies to numbers or timestamps (``inferline.features.rules``) and the standardization step of the compiled
   contract, run with ``xp=cupy`` on cupy arrays and with ``xp=numpy``, over generated values (1,000,000 by
   default) with nulls, infinities, subnormals, negative and pre-epoch timestamps; results compared (float64:
   allclose, rtol 1e-12; int64 and masks: equal), with the time per 1M values on each.
2. ``training``: a few AdamW steps of ``inferline.training.model.TabularNet`` on CUDA on random data (loss must
   fall), and one ``ScoringModel`` forward pass on CUDA compared with the same weights on the CPU.
3. ``nvml``: ``inferline.monitor.utilization.UtilizationSampler`` sampled while the GPU runs matrix products: NVML
   state ``ok`` and real figures (utilization, memory, power, device name). Where that module cannot be imported
   (psutil or prometheus_client missing) NVML is read through pynvml directly, and the report says so.

It needs numpy, and for the checks cupy, torch with CUDA and nvidia-ml-py; never pandas. Run from a checkout it
needs no install: ``python3 benchmarks/gpu_check.py`` imports ``inferline`` from the checkout (its stage folders are
reached through the symlinks ``inferline/<stage>``); ``python -m inferline.benchmarks.gpu_check`` where installed.

This script parses the command line only; ``main`` imports the rest once ``inferline`` imports from the right
place: ``gpu_check_report`` (runs the checks, prints and writes the report), one module per check
(``gpu_check_kernels``, ``gpu_check_training``, ``gpu_check_nvml``) and ``gpu_check_result`` (what they share).

Writes a human-readable report to stdout and JSON to ``--out`` (default ``$OUT/gpu_check.json`` where ``$OUT`` is
set, else ``build/gpu_check.json``). Exit status: 0 all three passed; 1 a check failed; 2 none failed but at least
one could not run (no GPU, a library missing); 3 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main", "use_checkout"]


def use_checkout(repo: Path) -> str:
    """Make ``inferline.*`` import from the checkout ``repo`` (whatever is installed), before anything imports it:
    the repository root goes first on ``sys.path`` (``inferline/<stage>`` are symlinks to the stage folders)."""
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != Path(here)]  # benchmarks/ is no top level
    if "inferline" in sys.modules:
        return f"already imported from {getattr(sys.modules['inferline'], '__file__', '?')}"
    sys.path.insert(0, str(repo))
    return f"the checkout {repo} (not pip-installed)"


def _default_out() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else Path("build") / "gpu_check.json"


def build_parser() -> argparse.ArgumentParser:
    """The command line: where the JSON goes and how much each check does."""
    parser = argparse.ArgumentParser(
        prog="gpu_check.py", description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON report ($OUT/gpu_check.json or build/...)")
    parser.add_argument("--n", type=int, default=1_000_000, help="values per kernel (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per kernel and side (median)")
    parser.add_argument("--steps", type=int, default=60, help="training steps on CUDA")
    parser.add_argument("--load-seconds", type=float, default=3.0, help="GPU load while NVML is sampled")
    return parser


def main(argv: Sequence[str] | None = None, origin: str = "the installed package") -> int:
    """Parse the command line and run the checks (``gpu_check_report``); the exit status. The checks' modules are
    imported here, not at the top: run as a file, ``use_checkout`` has then put the checkout on ``sys.path``."""
    from inferline.benchmarks.gpu_check_result import EXIT_OK, EXIT_USAGE

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    if args.n < 1000 or args.repeats < 1 or args.steps < 20 or args.load_seconds <= 0:
        print("gpu_check: --n >= 1000, --repeats >= 1, --steps >= 20 and --load-seconds > 0", file=sys.stderr)
        return EXIT_USAGE
    from inferline.benchmarks.gpu_check_report import run_checks

    out_path: Path = args.out or _default_out()
    return run_checks(args.n, args.repeats, args.steps, args.load_seconds, out_path, origin)


if __name__ == "__main__":
    _origin = "the installed package"
    if not __package__:  # run as a file: import this checkout, installed or not
        _origin = use_checkout(Path(__file__).resolve().parent.parent)
    sys.exit(main(origin=_origin))
