"""The edge's TLS: a server context from a certificate chain and key (mutual TLS with a client CA), and
``ReloadingTls``, which serves a renewed certificate from the next handshake on, over HTTP and gRPC alike.

Why reload in place: certificates are renewed (cert-manager, an ACME client) while the edge runs; a restart to pick
one up would drop every connection and what is in flight.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["ReloadingTls", "tls_context"]

log = logging.getLogger("inferline.serving")


def tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """The edge's TLS: the certificate chain and key (TLS 1.2 at least, Python's default ciphers); with
    ``client_ca``, mutual TLS: a caller must present a certificate that CA signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"TLS files cannot be used ({exc}): --tls-cert {cert} and --tls-key {key} must be a PEM certificate "
            f"(chain) and its private key{f', --tls-client-ca {client_ca} a PEM CA bundle' if client_ca else ''}"
        ) from exc
    return context


@contextlib.contextmanager
def _snapshot(files: tuple[Path, ...]) -> Iterator[tuple[Path, ...]]:
    """Private copies of ``files`` (in a folder only this user can read, removed after): what is checked is what is
    loaded, even if a file is replaced in between."""
    with tempfile.TemporaryDirectory(prefix="inferline-tls-") as folder:
        copies = tuple(Path(folder) / f"{i}.pem" for i in range(len(files)))
        for source, copy in zip(files, copies, strict=True):
            copy.write_bytes(source.read_bytes())
        yield copies


class ReloadingTls:
    """The edge's TLS files, re-read when they change: a renewed certificate (or CA bundle) is served from the next
    handshake on, without a restart. ``changed()`` reloads the HTTP edge's ``context`` in place (OpenSSL hands new
    connections the context's current certificate); ``grpc_credentials()`` gives the gRPC edge credentials whose
    fetcher, called by gRPC at each handshake, does the same check. New files are loaded only once they load
    together in a context of their own: a half-replaced pair (a new certificate beside the old key, in either
    order) leaves the previous pair served until the pair is whole (loading it in place would have cleared the key
    and failed every handshake meanwhile). A CA bundle loaded in place adds to what the HTTP edge trusts: a CA
    removed from ``--tls-client-ca`` is still trusted there until a restart (the gRPC edge takes the new bundle
    alone)."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = Path(cert), Path(key), client_ca
        self.context = tls_context(self.cert, self.key, client_ca)
        self._stamp = self._stamp_now()
        self.reloads = 0

    def _files(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((Path(self.client_ca),) if self.client_ca is not None else ())

    def _stamp_now(self) -> tuple[tuple[int, int], ...]:
        return tuple((st.st_mtime_ns, st.st_size) for st in (f.stat() for f in self._files()))

    def changed(self) -> bool:
        """Reload the HTTP context when a file changed; True when a new certificate is now served."""
        try:
            stamp = self._stamp_now()
        except OSError:
            return False  # a file being replaced: look again next time
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            with _snapshot(self._files()) as (cert, key, *ca):
                tls_context(cert, key, ca[0] if ca else None)  # the new files load together, or nothing changes
                self.context.load_cert_chain(str(cert), str(key))
                if ca:
                    self.context.load_verify_locations(cafile=str(ca[0]))
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("TLS files changed but do not load together (%s); still serving the previous pair", exc)
            return False
        self.reloads += 1
        return True

    def grpc_credentials(self) -> Any:
        import grpc

        def configuration() -> Any:
            """The files as they are now, once they load together (else ValueError: gRPC keeps what it has)."""
            with _snapshot(self._files()) as (cert, key, *ca):
                tls_context(cert, key, ca[0] if ca else None)
                pair = (key.read_bytes(), cert.read_bytes())
                roots = ca[0].read_bytes() if ca else None
            return grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)

        seen = [self._stamp_now()]

        def fetch() -> Any:
            try:
                stamp = self._stamp_now()
                if stamp == seen[0]:
                    return None  # unchanged: gRPC keeps the current configuration
                new = configuration()
            except (OSError, ValueError):
                return None  # a file being replaced, or a half-replaced pair: look again at the next handshake
            seen[0] = stamp
            return new

        return grpc.dynamic_ssl_server_credentials(
            configuration(), fetch, require_client_authentication=self.client_ca is not None
        )
