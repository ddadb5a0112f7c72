"""The admin key reaches tritonserver's argv without ever being in its argument memory, which ``/proc/PID/cmdline``
shows to every local user: the flags carry ``SECRET_PLACEHOLDER``, and ``argv_secret.c`` (an LD_PRELOAD library
built on first use with the machine's C compiler, ``argv_secret_library``) hands the real key from the environment
(``SECRET_VARIABLE``) to Triton's argv before ``main()``.

Apart from ``server`` because it is a build step (find a compiler, compile, check who may write the library), not
part of running the server.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from inferline.serving.triton_index import ServerError

__all__ = ["LIBRARY_VARIABLE", "SECRET_PLACEHOLDER", "SECRET_VARIABLE", "argv_secret_library"]

SECRET_PLACEHOLDER = "@INFERLINE_ADMIN_KEY@"  # what tritonserver's command line shows where the admin key goes
SECRET_VARIABLE = "INFERLINE_ARGV_SECRET"  # the environment variable argv_secret.c reads the key from

_PRELOAD_SEPARATORS = {" ", ":", "\t", "\n"}


def _private_dir() -> Path:
    """``$TMPDIR/inferline-<uid>``, mode 0700 and owned by this user (refused otherwise: another user could swap
    the library the server preloads)."""
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"inferline-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ServerError(
            f"{folder} is not a private folder of this user's (owner uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}); "
            "expected a directory with mode 0700 owned by you: remove it, or use a --workdir without spaces or colons"
        )
    if set(str(folder)) & _PRELOAD_SEPARATORS:
        raise ServerError(f"the temporary folder {folder} holds a space or a colon; set TMPDIR to one that does not")
    return folder


LIBRARY_VARIABLE = "INFERLINE_ARGV_LIBRARY"  # a prebuilt argv_secret library (images without a compiler)


def _trusted_library(path: Path) -> Path:
    """``path`` as the library to preload: a regular file that only its owner (this user or root) can write."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ServerError(
            f"{LIBRARY_VARIABLE} names {path}, which cannot be read ({exc.strerror}); expected the library built from "
            "serving/argv_secret.c (`gcc -shared -fPIC -O2 -o argv_secret.so serving/argv_secret.c`), or unset it "
            "to build one on first use"
        ) from exc
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022 or st.st_uid not in (0, os.getuid()):
        raise ServerError(
            f"{LIBRARY_VARIABLE} names {path} (owner uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}); expected a "
            "regular file that only its owner (root or you) can write: tritonserver preloads it with its admin key"
        )
    return path


def argv_secret_library(workdir: Path) -> Path:
    """The LD_PRELOAD library that puts the admin key into tritonserver's argv without it ever being in the
    argument memory ``/proc/PID/cmdline`` shows (``serving/argv_secret.c``), compiled on first use with the
    machine's C compiler (``$CC``, else ``gcc``, else ``cc``) into ``<workdir>/serving/``, named by its source's
    hash; or the prebuilt one named by ``INFERLINE_ARGV_LIBRARY`` (the container image builds it at build
    time: its runtime stage has no compiler). No compiler, or a failed build, is a ``ServerError`` saying what to
    install: the server is not started with its key readable by other users instead."""
    import hashlib
    import shutil

    prebuilt = os.environ.get(LIBRARY_VARIABLE)
    if prebuilt:  # built once where a compiler was (a container image's build stage): never rebuilt here
        return _trusted_library(Path(prebuilt))
    source = Path(__file__).with_name("argv_secret.c")
    code = source.read_bytes()
    name = f"argv_secret-{hashlib.sha256(code).hexdigest()[:12]}.so"
    target = Path(workdir).resolve() / "serving" / name
    if set(str(target)) & _PRELOAD_SEPARATORS:
        # LD_PRELOAD splits on spaces and colons and has no quoting: a work directory holding one would preload
        # fragments (found by a benchmark's workdir). Then the library lives in a private folder of this user's.
        target = _private_dir() / name
    if target.is_file():
        return target
    compilers = [c for c in (os.environ.get("CC"), "gcc", "cc") if c]
    compiler = next((shutil.which(c) for c in compilers if shutil.which(c)), None)
    if compiler is None:
        raise ServerError(
            f"no C compiler found (tried {compilers}); inferline builds {source.name}, a small library that hands "
            "tritonserver its admin key without putting it on the command line other users can read. Install one "
            "(Debian: apt-get install gcc) or set CC to a compiler, then start the server again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(staged), str(source)], capture_output=True, text=True
    )
    if done.returncode != 0:
        staged.unlink(missing_ok=True)
        raise ServerError(
            f"{compiler} could not build {source} (exit {done.returncode}): {done.stderr.strip()[-800:]}; expected "
            "a shared library for this Linux/glibc machine. Check the compiler works (`gcc --version`), or set CC "
            "to one that does"
        )
    os.replace(staged, target)
    return target
