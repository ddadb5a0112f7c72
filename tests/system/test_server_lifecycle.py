"""tritonserver's life as a local user sees it (issue 29, part 4): the admin key never on its command line from
spawn to stop, and nothing of it left after a stop: no process of its group (its Python-backend stubs), no
shared-memory region in /dev/shm."""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from inferline.core.secrets import ADMIN_HEADER
from inferline.serving.argv_secret import SECRET_PLACEHOLDER
from inferline.serving.server import ServerConfig, TritonServer

from .conftest import Published, group_of, leftover_stubs, reaped


def _index(url: str, key: str | None) -> int:
    headers = {ADMIN_HEADER: key} if key is not None else {}
    request = urllib.request.Request(f"http://{url}/v2/repository/index", data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_the_admin_key_is_never_on_the_command_line_and_a_stop_leaves_nothing(
    published: Published, tmp_path: Path
) -> None:
    """`/proc/PID/cmdline` is readable by every local user: polled from the spawn until the server is ready it holds
    the placeholder, never the key (argv_secret.c hands the key to tritonserver's argv from the environment), and
    `/proc/PID/environ` no longer holds it either once the process runs. Triton enforces the key it got: a restricted
    API without it is 403, with it 200. The stop reaps the whole process group (the stub included) and removes the
    stub's shared-memory region."""
    shutil.copytree(published.repository, tmp_path / "triton_models")
    server = TritonServer(ServerConfig.on_free_ports(tmp_path / "triton_models", tmp_path / "work"))
    key = server.admin_key.encode()
    server.start(wait=False)
    assert server.process is not None
    pid, reads, seen = server.process.pid, 0, b""
    try:
        deadline = time.monotonic() + 120
        while not server.is_ready():
            assert time.monotonic() < deadline, server.log_tail()
            assert server.process.poll() is None, server.log_tail()
            try:
                seen = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # between fork and exec
            reads += 1
            assert key not in seen, "the admin key was readable in tritonserver's /proc/PID/cmdline"
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert reads > 10 and key not in cmdline and f"admin-key={SECRET_PLACEHOLDER}".encode() in cmdline
        assert key not in Path(f"/proc/{pid}/environ").read_bytes()
        assert _index(server.config.http_url, None) == 403
        assert _index(server.config.http_url, "not-the-key") == 403
        assert _index(server.config.http_url, server.admin_key) == 200
        server.wait_ready(60)
        pids, regions = group_of(pid)
        assert len(pids) >= 2 and regions, (pids, regions)  # tritonserver and its stub, with its region
        assert set(pids) - {pid} <= set(leftover_stubs())  # the suite's end-of-session check would see its stub
    finally:
        server.stop()
    assert reaped(pids, regions), "a process of the stopped server's group, or its shared memory, is left"


def test_a_work_directory_with_a_space_gets_a_preloadable_library(tmp_path: Path) -> None:
    """LD_PRELOAD splits on spaces and colons: such a work directory gets the library in a private folder."""
    from inferline.serving.argv_secret import argv_secret_library

    library = argv_secret_library(tmp_path / "my work: dir")
    assert library.is_file() and not set(str(library)) & {" ", ":"}
    assert library.parent.stat().st_mode & 0o077 == 0 and library.parent.stat().st_uid == os.getuid()
    assert argv_secret_library(tmp_path / "plain") == (tmp_path / "plain").resolve() / "serving" / library.name


def test_a_prebuilt_library_is_used_only_when_only_its_owner_can_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INFERLINE_ARGV_LIBRARY (the container image builds the library where a compiler is, its runtime stage has
    none): taken as it is, never rebuilt; refused, saying why, when others could write it or it is missing."""
    from inferline.serving.argv_secret import argv_secret_library
    from inferline.serving.triton_index import ServerError

    built = argv_secret_library(tmp_path / "build")
    prebuilt = tmp_path / "argv_secret.so"
    shutil.copy(built, prebuilt)
    prebuilt.chmod(0o755)
    monkeypatch.setenv("INFERLINE_ARGV_LIBRARY", str(prebuilt))
    assert argv_secret_library(tmp_path / "elsewhere") == prebuilt
    assert not (tmp_path / "elsewhere").exists()  # nothing compiled
    prebuilt.chmod(0o775)
    with pytest.raises(ServerError, match="only its owner"):
        argv_secret_library(tmp_path / "elsewhere")
    monkeypatch.setenv("INFERLINE_ARGV_LIBRARY", str(tmp_path / "missing.so"))
    with pytest.raises(ServerError, match="cannot be read"):
        argv_secret_library(tmp_path / "elsewhere")
