"""The edge's certificate reload (``serving.edge_tls.ReloadingTls``) during a renewal, checked with in-memory TLS
handshakes (no socket, no server): the files of ``tests/unit/tls/`` replaced one at a time, in either order.

Loading a new certificate in place beside the old key used to clear the key from the served context, so every
handshake failed until the key file was replaced too (found writing docs/how-to/rotate-keys-and-certificates.md)."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from inferline.serving.edge_tls import ReloadingTls

PKI = Path(__file__).parent / "tls"


def served_name(context: ssl.SSLContext) -> str:
    """The common name of the certificate ``context`` presents to a client that trusts the test CA."""
    client = ssl.create_default_context(cafile=str(PKI / "ca.pem"))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    tls_server = context.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):  # a TLS 1.3 handshake takes two round trips
        for side, obj in (("client", tls_client), ("server", tls_server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), done
    subject = dict(x[0] for x in tls_client.getpeercert()["subject"])  # type: ignore[index,misc]
    return str(subject["commonName"])


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "edge.crt", tmp_path / "edge.key"
    shutil.copyfile(PKI / "first.pem", cert)
    shutil.copyfile(PKI / "first.key", key)
    return cert, key


def replace(source: Path, target: Path) -> None:
    """As a renewal does: the new file written beside, then renamed over the old one."""
    staged = target.with_suffix(".next")
    shutil.copyfile(source, staged)
    staged.replace(target)


@pytest.mark.parametrize("first", ["certificate", "key"])
def test_a_half_replaced_pair_keeps_the_old_one_served_until_it_is_whole(files: tuple[Path, Path], first: str) -> None:
    cert, key = files
    tls = ReloadingTls(cert, key)
    assert served_name(tls.context) == "first"
    new = {"certificate": (PKI / "second.pem", cert), "key": (PKI / "second.key", key)}
    then = "key" if first == "certificate" else "certificate"

    replace(*new[first])
    assert not tls.changed()  # the new file does not load with the old one: nothing changes
    assert served_name(tls.context) == "first"

    replace(*new[then])
    assert tls.changed() and tls.reloads == 1
    assert served_name(tls.context) == "second"
    assert not tls.changed()  # unchanged files are not read again


def test_a_file_that_is_not_pem_keeps_the_old_pair(files: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    cert, key = files
    tls = ReloadingTls(cert, key)
    cert.write_text("not a certificate\n")
    assert not tls.changed() and served_name(tls.context) == "first"
    assert "do not load together" in caplog.text and "still serving the previous pair" in caplog.text
    replace(PKI / "first.pem", cert)  # put back: the same pair again is a reload that serves the same certificate
    assert tls.changed() and served_name(tls.context) == "first"
