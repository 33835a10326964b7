"""Real ``queue-node`` processes for the SDK's tests.

The binaries come from ``RAFTQ_BIN_DIR``, or else the Cargo target
directory (``CARGO_TARGET_DIR``, default the repository's ``target``),
debug build. ``scripts/sdk-test.sh`` builds them first.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from raftq._proto.raftq.v1 import cluster_pb2 as cpb
from raftq._proto.raftq.v1 import cluster_pb2_grpc as cpb_grpc
from raftq._proto.raftq.v1 import queue_pb2 as pb
from raftq._proto.raftq.v1 import queue_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def binary(name: str) -> Path:
    configured = os.environ.get("RAFTQ_BIN_DIR")
    if configured:
        path = Path(configured) / name
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        path = target / "debug" / name
    if not path.exists():
        raise RuntimeError(f"{path} not found: build it with `cargo build --workspace` (or set RAFTQ_BIN_DIR)")
    return path


_LOWEST_PORT = 10_000
_next_port = itertools.count()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            start = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768
    return start if start > _LOWEST_PORT + 1_000 else 32_768


def free_port() -> str:
    """A loopback address free now and below the kernel's ephemeral range.

    A port picked by binding port 0 comes from that range, and before (or
    while restarting) its node listens, an outgoing connection can be given
    it, so the node cannot listen ("Address already in use"). The search
    starts at an offset spread by process so concurrent runs seldom collide.
    """
    span = _ephemeral_start() - _LOWEST_PORT
    offset = os.getpid() * 7_919 % span
    for _ in range(span):
        port = _LOWEST_PORT + (offset + next(_next_port)) % span
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return f"127.0.0.1:{port}"
    raise RuntimeError("no free loopback port below the ephemeral range")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Polls ``check`` until it returns a true value (a non-empty list, True, ...)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Node:
    id: int
    addr: str
    peer_addr: str
    dir: Path
    members: str
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.dir.with_suffix(".log"), "ab")
        self.proc = subprocess.Popen(
            [
                str(binary("queue-node")),
                "--node-id",
                str(self.id),
                "--listen",
                self.addr,
                "--peer-listen",
                self.peer_addr,
                "--data-dir",
                str(self.dir),
                "--initial-members",
                self.members,
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "RAFTQ_LOG": "info,openraft=warn"},
        )
        log.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def terminate(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def log(self) -> str:
        path = self.dir.with_suffix(".log")
        return path.read_text(errors="replace") if path.exists() else ""

    def status(self) -> cpb.ClusterStatus | None:
        """The node's Raft status from its peer port, or None while it is down."""
        with grpc.insecure_channel(self.peer_addr) as channel:
            try:
                return cpb_grpc.ClusterAdminStub(channel).Status(cpb.ClusterStatusRequest(), timeout=2)
            except grpc.RpcError:
                return None


def spawn_cluster(root: Path, n: int, extra: list[str] | None = None) -> list[Node]:
    peers = [free_port() for _ in range(n)]
    members = ",".join(f"{i + 1}={p}" for i, p in enumerate(peers))
    nodes = [Node(i + 1, free_port(), peers[i], root / f"n{i + 1}", members, list(extra or [])) for i in range(n)]
    for node in nodes:
        node.start()
    return nodes


def wait_serving(
    node: Node, metadata: tuple[tuple[str, str], ...] = (), credentials: grpc.ChannelCredentials | None = None
) -> None:
    """Waits until the node answers a linearizable Stats call: every shard
    has a leader."""

    def ready() -> bool:
        channel = grpc.secure_channel(node.addr, credentials) if credentials else grpc.insecure_channel(node.addr)
        with channel:
            try:
                pb_grpc.QueueAdminStub(channel).Stats(pb.StatsRequest(), metadata=metadata, timeout=2)
                return True
            except grpc.RpcError:
                if node.proc is not None and node.proc.poll() is not None:
                    raise AssertionError(f"queue-node {node.id} exited:\n{node.log()[-3000:]}") from None
                return False

    wait_for(f"node {node.id} to serve", ready, timeout=60)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """One plaintext node on loopback."""
    (only,) = spawn_cluster(tmp_path, 1)
    try:
        wait_serving(only)
        yield only
    finally:
        only.kill()


@dataclass
class DevCerts:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def token(self) -> str:
        return (self.dir / "token").read_text().strip()

    def node_args(self) -> list[str]:
        return [
            "--tls-cert",
            str(self.dir / "node.pem"),
            "--tls-key",
            str(self.dir / "node-key.pem"),
            "--tls-ca",
            str(self.ca),
            "--auth-file",
            str(self.dir / "auth.yaml"),
        ]


@pytest.fixture
def dev_certs(tmp_path: Path) -> DevCerts:
    """A CA, node certificate, admin token and auth file from `raftq dev-certs`."""
    out = tmp_path / "certs"
    subprocess.run([str(binary("raftq")), "dev-certs", "--out", str(out)], check=True, capture_output=True)
    return DevCerts(out)
