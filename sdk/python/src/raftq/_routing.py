"""Sending each queue's requests straight to its shard's leader.

The client reads the shard map (``Queue.GetShardMap``) from the node it
connected to, keeps a connection per leader, and sends a queue's enqueues
and worker stream to the leader of the queue's shard with the metadata
``x-raftq-route: direct``. A node that no longer leads answers UNAVAILABLE
with the leader in its trailers: the route is updated and the retry goes
there. Where the map says nothing (no leader yet, an address not known, a
node without the call) or a leader cannot be reached, calls go to the node
connected to, which forwards them."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from raftq._proto.raftq.v1 import queue_pb2 as pb

# How long a leader that could not be reached is left alone (seconds).
UNREACHABLE_FOR = 30.0
# The map is read again at most this often (seconds).
REFRESH_AT_MOST_EVERY = 0.5
DIRECT = ("x-raftq-route", "direct")
_CONNECTION_FAILURE = re.compile(r"connect|Socket closed|failed to connect|DNS resolution|Connection reset", re.I)


def shard_of(queue: str, shards: int) -> int:
    """The shard that holds ``queue`` among ``shards``: FNV-1a-64 of its
    UTF-8 name, as every node computes it."""
    value = 0xCBF29CE484222325
    for byte in queue.encode():
        value ^= byte
        value = (value * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value % max(shards, 1)


def is_connection_failure(code: grpc.StatusCode | None, details: str | None) -> bool:
    """Whether a failure came from the connection rather than from a node."""
    return code == grpc.StatusCode.UNAVAILABLE and bool(_CONNECTION_FAILURE.search(details or ""))


class Router:
    """The shard map as last read, and a stub per leader. Thread-safe."""

    def __init__(self, dial: Callable[[str], Any]) -> None:
        self._dial = dial
        self._lock = threading.Lock()
        self._shard_count = 0
        # Queues that stayed on their shard when the shard count grew.
        self._pinned: dict[str, int] = {}
        self._routing_version = 0
        self._leaders: dict[int, tuple[str, int]] = {}
        self._channels: dict[str, Any] = {}
        self._unreachable: dict[str, float] = {}
        self._last_read = 0.0

    def learn_map(self, shard_map: pb.ShardMap) -> None:
        """Takes a map; a route older (lower term) than one known is ignored."""
        with self._lock:
            if shard_map.routing_version >= self._routing_version:
                self._shard_count = shard_map.shard_count
                self._pinned = dict(shard_map.pinned)
                self._routing_version = shard_map.routing_version
            for route in shard_map.shards:
                if not route.leader_addr:
                    continue
                known = self._leaders.get(route.shard)
                if known is None or route.term >= known[1]:
                    self._leaders[route.shard] = (route.leader_addr, route.term)

    def learn_trailers(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        """Takes the leader a "not the leader" answer names; whether it named
        one (else the map should be read again)."""
        values = {key: value.decode() if isinstance(value, bytes) else value for key, value in metadata or ()}
        shard, term = values.get("x-raftq-leader-shard"), values.get("x-raftq-leader-term")
        if shard is None or term is None:
            return False
        addr = values.get("x-raftq-leader-addr", "")
        version = values.get("x-raftq-routing-version")
        with self._lock:
            # The shard count grew since the map was read: queues may live
            # elsewhere now.
            if version is not None and int(version) > self._routing_version:
                return False
            if not addr:
                self._leaders.pop(int(shard), None)
                return False
            known = self._leaders.get(int(shard))
            if known is None or int(term) >= known[1]:
                self._leaders[int(shard)] = (addr, int(term))
        return True

    def refresh_due(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last_read < REFRESH_AT_MOST_EVERY:
                return False
            self._last_read = now
            return True

    def mark_unreachable(self, addr: str) -> Any | None:
        """Leaves ``addr`` alone for a while; returns its channel to close."""
        with self._lock:
            self._unreachable[addr] = time.monotonic()
            return self._channels.pop(addr, None)

    def leader(self, queue: str) -> tuple[str, Any] | None:
        """The leader of ``queue``'s shard and a channel to it, when known."""
        with self._lock:
            if self._shard_count == 0:
                return None
            shard = self._pinned.get(queue)
            if shard is None:
                shard = shard_of(queue, self._shard_count)
            route = self._leaders.get(shard)
            if route is None:
                return None
            addr = route[0]
            since = self._unreachable.get(addr)
            if since is not None:
                if time.monotonic() - since < UNREACHABLE_FOR:
                    return None
                del self._unreachable[addr]
            channel = self._channels.get(addr)
            if channel is None:
                channel = self._dial(addr)
                self._channels[addr] = channel
            return addr, channel

    def take_channels(self) -> list[Any]:
        """Every leader channel, forgotten: the caller closes them."""
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            return channels
