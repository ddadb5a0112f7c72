"""Several hosts on one machine, for the multi-host tests: each host is a Linux network namespace (``ip netns``,
iproute2) with its own address, joined to the others and to the test's own namespace by a veth pair on a bridge.
A host's link can be cut (``ip link set ... down``) and restored, which is what a network fault looks like to the
processes on it: their packets stop, their sockets stay open.

Needs root (the tests run as root here) and a kernel that allows network namespaces; :func:`netns_refusal` says
why not where they cannot be made, so the tests skip cleanly. Every name carries a random tag, so two test runs on
one machine never share a namespace, an interface or a subnet.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

__all__ = ["Host", "Network", "netns_refusal", "network"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def netns_refusal() -> str | None:
    """None where a network namespace can be made and removed here, else why not."""
    if shutil.which("ip") is None:
        return "no `ip` command (Debian's iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"ilprobe{secrets.token_hex(3)}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"`ip netns add` refused: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass
class Host:
    """One namespace: ``address`` is its IPv4 address on the test network; ``link`` the veth end outside it."""

    name: str
    address: str
    link: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], log: Path | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host (its output to ``log``); stopped by :meth:`Network.close` at the latest."""
        out: IO[bytes] | int = log.open("wb") if log is not None else subprocess.DEVNULL
        try:
            process = subprocess.Popen(self.command(argv), stdout=out, stderr=subprocess.STDOUT, **kwargs)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.processes.append(process)
        return process

    def run(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout)

    def cut(self) -> None:
        """Take the host off the network: its link goes down, its processes keep running."""
        _ip("link", "set", self.link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.link, "up")


class Network:
    """A bridge in the test's namespace (address ``gateway``) and the hosts added to it."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag
        octets = secrets.randbelow(200) + 20, secrets.randbelow(250) + 1
        self.prefix = f"10.{octets[0]}.{octets[1]}"
        self.gateway = f"{self.prefix}.1"
        self.bridge = f"ilbr{tag}"
        self.hosts: list[Host] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self) -> Host:
        i = len(self.hosts) + 1
        name, outside, inside = f"ilns{self.tag}{i}", f"ilvh{self.tag}{i}", f"ilvn{self.tag}{i}"
        host = Host(name=name, address=f"{self.prefix}.{10 + i}", link=outside)
        _ip("netns", "add", name)
        self.hosts.append(host)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        for args in (
            ("addr", "add", f"{host.address}/24", "dev", inside),
            ("link", "set", inside, "up"),
            ("link", "set", "lo", "up"),
            ("route", "add", "default", "via", self.gateway),
        ):
            _ip("-n", name, *args)
        return host

    def close(self) -> None:
        """Stop every process started on a host, then remove the namespaces, their links and the bridge."""
        for host in self.hosts:
            for p in host.processes:
                if p.poll() is None:
                    p.kill()
                p.wait(30)
        for host in self.hosts:
            # `ip netns exec` leaves the command as its child: kill whatever still runs in the namespace
            pids = _ip("netns", "pids", host.name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("link", "del", host.link, check=False)
            _ip("netns", "del", host.name, check=False)
        _ip("link", "del", self.bridge, check=False)


@pytest.fixture
def network() -> Iterator[Network]:
    """A test network of the test's own; skips where network namespaces cannot be made."""
    refusal = netns_refusal()
    if refusal is not None:
        pytest.skip(f"multi-host test needs network namespaces: {refusal}")
    net = Network()
    try:
        yield net
    finally:
        net.close()
