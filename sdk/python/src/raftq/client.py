"""Connections to a raftq node: ``Client`` (blocking) and ``AsyncClient``
(asyncio). Any node will do: it forwards each call to its shard's leader.
Producers and workers go straight to the leaders the shard map names
(``_routing``); ``route_to_leaders=False`` sends everything to the node
connected to."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
import grpc.aio

from raftq._limits import MAX_MESSAGE_BYTES, error_text
from raftq._proto.raftq.v1 import queue_pb2 as pb
from raftq._proto.raftq.v1 import queue_pb2_grpc as pb_grpc
from raftq._routing import DIRECT, Router, is_connection_failure
from raftq.errors import RaftqError
from raftq.jobs import Job, job_from_leased


def _seconds_ms(value: float | None) -> int | None:
    return None if value is None else int(value * 1000)


def _fetch_request(queue: str, max_jobs: int, lease: float | None, wait: float, worker_id: str) -> pb.FetchRequest:
    request = pb.FetchRequest(queue=queue, worker_id=worker_id, max_jobs=max_jobs, wait_ms=int(wait * 1000))
    if lease is not None:
        request.lease_ms = int(lease * 1000)
    return request


def _one_result(results: Sequence[pb.TokenResult], job: Job) -> pb.TokenResult:
    """A single-token call's answer; the node reports failures as a status,
    so any result here succeeded."""
    if len(results) != 1:
        raise RaftqError(grpc.StatusCode.INTERNAL, f"the node answered {len(results)} results for job {job.id}")
    return results[0]


def _nack_request(job: Job, error: str, retry_after: float | None, dead: bool) -> pb.NackRequest:
    item = pb.NackItem(token=job.token, error=error_text(error), dead=dead)
    delay = _seconds_ms(retry_after)
    if delay is not None:
        item.retry_delay_ms = delay
    return pb.NackRequest(items=[item])


if TYPE_CHECKING:
    from raftq.producer import AsyncProducer, Producer

T = TypeVar("T")


@dataclass(frozen=True)
class TLS:
    """TLS settings. ``ca_cert``: the CA that signed the node's certificate
    (PEM bytes or a file path; None trusts the system's roots).
    ``cert`` / ``key``: a client certificate, which makes the caller the
    principal its SAN or CN names. ``server_name``: the name the node's
    certificate must carry when it differs from the host connected to."""

    ca_cert: bytes | str | Path | None = None
    cert: bytes | str | Path | None = None
    key: bytes | str | Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS needs both cert and key for a client certificate, or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.ca_cert),
            private_key=_pem(self.key),
            certificate_chain=_pem(self.cert),
        )


def _pem(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    text = str(value)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    return Path(text).read_bytes()


@dataclass(frozen=True)
class RetryPolicy:
    """How failed calls that may succeed later (elections, restarts,
    backpressure) are retried: exponential backoff until ``deadline``
    seconds have passed. ``RetryPolicy.never()`` tries once."""

    deadline: float = 30.0
    initial_backoff: float = 0.05
    max_backoff: float = 1.0

    @staticmethod
    def never() -> RetryPolicy:
        return RetryPolicy(deadline=0.0)

    def run(self, call: Callable[[], T]) -> T:
        started = time.monotonic()
        backoff = self.initial_backoff
        while True:
            try:
                return call()
            except grpc.RpcError as e:
                error = RaftqError.from_rpc(e)
                if not error.retryable or time.monotonic() - started + backoff > self.deadline:
                    raise error from None
            time.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def run_async(self, call: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        backoff = self.initial_backoff
        while True:
            try:
                return await call()
            except grpc.RpcError as e:
                error = RaftqError.from_rpc(e)
                if not error.retryable or time.monotonic() - started + backoff > self.deadline:
                    raise error from None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)


def _target(address: str, tls: TLS | None) -> str:
    scheme, sep, rest = address.partition("://")
    if not sep:
        return address.rstrip("/")
    if scheme == "http" and tls is not None:
        raise ValueError(f"{address}: an http:// address with TLS on; use https:// or host:port")
    if scheme == "https" and tls is None:
        raise ValueError(f"{address}: an https:// address needs TLS settings (tls=TLS(...))")
    if scheme not in ("http", "https"):
        raise ValueError(f"{address}: unknown scheme {scheme!r}; use host:port")
    return rest.rstrip("/")


_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
)


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    if token is None:
        return ()
    token = token.strip()
    if not token.isascii() or not token.isprintable():
        raise ValueError("the token must be printable ASCII")
    return (("authorization", f"Bearer {token}"),)


def _options(tls: TLS | None) -> list[tuple[str, Any]]:
    options = list(_OPTIONS)
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def _learn(router: Router, leader: str | None, error: grpc.RpcError) -> tuple[bool, Any | None]:
    """What a failed call through ``leader`` (None: the node connected to)
    teaches: (read the map again?, a channel to close)."""
    call = error if isinstance(error, grpc.Call) else None
    trailers = call.trailing_metadata() if call is not None else None
    if router.learn_trailers(trailers):
        return False, None
    code = error.code() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None
    details = error.details() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None
    if leader is not None and is_connection_failure(code, details):
        return False, router.mark_unreachable(leader)
    return code == grpc.StatusCode.UNAVAILABLE and router.refresh_due(), None


class Client:
    """A blocking connection to a raftq node.

    >>> client = Client("127.0.0.1:7400")                       # doctest: +SKIP
    >>> client = Client("queue.example:7400", tls=TLS(ca_cert="ca.pem"), token=t)  # doctest: +SKIP
    """

    def __init__(
        self, address: str, *, tls: TLS | None = None, token: str | None = None, route_to_leaders: bool = True
    ) -> None:
        target = _target(address, tls)
        self.address = target
        self.metadata = _metadata(token)
        self._settings = (address, tls, token, route_to_leaders)
        self.channel = self._dial(target)
        self.queue = pb_grpc.QueueStub(self.channel)
        self.admin = pb_grpc.QueueAdminStub(self.channel)
        self._router: Router | None = None
        if route_to_leaders:
            self._router = Router(self._dial)
            # In the background: until the map is read, calls go to the node
            # connected to, which forwards them.
            threading.Thread(target=self._refresh_quietly, name="raftq-shard-map", daemon=True).start()

    def _dial(self, target: str) -> grpc.Channel:
        tls = self._settings[1]
        if tls is None:
            return grpc.insecure_channel(target, options=_options(None))
        return grpc.secure_channel(target, tls.credentials(), options=_options(tls))

    def refresh_shard_map(self) -> None:
        """Reads the shard map from the node connected to. Done after
        connecting and again when a leader moves; call it to route at once."""
        if self._router is None:
            return
        shard_map = self._call(
            lambda: self.queue.GetShardMap(pb.GetShardMapRequest(), metadata=self.metadata, timeout=10)
        )
        self._router.learn_map(shard_map)

    def _refresh_quietly(self) -> None:
        try:
            self.refresh_shard_map()
        except (RaftqError, ValueError):
            pass

    def target(self, queue: str) -> tuple[pb_grpc.QueueStub, tuple[tuple[str, str], ...], str | None]:
        """Where ``queue``'s next call goes: a stub, its metadata, and the
        leader's address (None for the node connected to)."""
        leader = self._router.leader(queue) if self._router is not None else None
        if leader is None:
            return self.queue, self.metadata, None
        addr, channel = leader
        return pb_grpc.QueueStub(cast(grpc.Channel, channel)), (*self.metadata, DIRECT), addr

    def observe(self, leader: str | None, error: grpc.RpcError) -> None:
        """Learns from a call through ``leader`` that failed with ``error``."""
        if self._router is None:
            return
        refresh, stale = _learn(self._router, leader, error)
        if stale is not None:
            stale.close()
        if refresh:
            self._refresh_quietly()

    def async_twin(self) -> AsyncClient:
        """An ``AsyncClient`` with this client's address, TLS, token and
        routing (call it inside a running event loop; close it when done)."""
        address, tls, token, route = self._settings
        return AsyncClient(address, tls=tls, token=token, route_to_leaders=route)

    def producer(self, retry: RetryPolicy | None = None) -> Producer:
        from raftq.producer import Producer

        return Producer(self, retry or RetryPolicy())

    def stats(self, queue: str = "") -> list[pb.QueueStats]:
        """Counts per queue (every queue when ``queue`` is empty)."""
        response = RetryPolicy().run(lambda: self.admin.Stats(pb.StatsRequest(queue=queue), metadata=self.metadata))
        return list(response.queues)

    def get_job(self, job_id: str) -> pb.Job:
        return RetryPolicy().run(lambda: self.admin.GetJob(pb.JobRef(job_id=job_id), metadata=self.metadata))

    # Leases by hand, for code that does not use a Worker: fetch, then ack,
    # nack or extend each job with the token it came with. A token from an
    # earlier delivery is refused (FAILED_PRECONDITION, "lease lost").

    def fetch(
        self, queue: str, *, max_jobs: int = 1, lease: float | None = None, wait: float = 0.0, worker_id: str = ""
    ) -> list[Job]:
        """Leases up to ``max_jobs`` ready jobs, waiting up to ``wait``
        seconds for one to appear."""
        request = _fetch_request(queue, max_jobs, lease, wait, worker_id)
        response = RetryPolicy().run(lambda: self.queue.Fetch(request, metadata=self.metadata))
        return [job_from_leased(leased) for leased in response.jobs]

    def ack(self, job: Job) -> None:
        request = pb.AckRequest(tokens=[job.token])
        _one_result(self._call(lambda: self.queue.Ack(request, metadata=self.metadata)).results, job)

    def nack(self, job: Job, error: str = "", *, retry_after: float | None = None, dead: bool = False) -> None:
        """Gives the job back: it retries after ``retry_after`` seconds (or
        its backoff), or goes to the dead letters with ``dead=True``."""
        request = _nack_request(job, error, retry_after, dead)
        _one_result(self._call(lambda: self.queue.Nack(request, metadata=self.metadata)).results, job)

    def extend(self, job: Job, lease: float | None = None) -> float:
        """Extends the lease by ``lease`` seconds from now (default: the
        queue's) and returns the new expiry as unix seconds."""
        request = pb.ExtendLeaseRequest(tokens=[job.token], lease_ms=_seconds_ms(lease))
        result = _one_result(self._call(lambda: self.queue.ExtendLease(request, metadata=self.metadata)).results, job)
        job.lease_expires_at = result.lease_expires_at_ms / 1000.0
        return job.lease_expires_at

    @staticmethod
    def _call(call: Callable[[], T]) -> T:
        try:
            return call()
        except grpc.RpcError as e:
            raise RaftqError.from_rpc(e) from None

    def close(self) -> None:
        if self._router is not None:
            for channel in self._router.take_channels():
                channel.close()
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """An asyncio connection to a raftq node (create it inside a running
    event loop)."""

    def __init__(
        self, address: str, *, tls: TLS | None = None, token: str | None = None, route_to_leaders: bool = True
    ) -> None:
        target = _target(address, tls)
        self.address = target
        self.metadata = _metadata(token)
        self._tls = tls
        self.channel = self._dial(target)
        self.queue = pb_grpc.QueueStub(self.channel)
        self.admin = pb_grpc.QueueAdminStub(self.channel)
        self._router: Router | None = None
        self._reading: asyncio.Task[None] | None = None
        if route_to_leaders:
            self._router = Router(self._dial)
            # In the background: until the map is read, calls go to the node
            # connected to, which forwards them.
            self._reading = asyncio.ensure_future(self._refresh_quietly())

    def _dial(self, target: str) -> grpc.aio.Channel:
        if self._tls is None:
            return grpc.aio.insecure_channel(target, options=_options(None))
        return grpc.aio.secure_channel(target, self._tls.credentials(), options=_options(self._tls))

    async def refresh_shard_map(self) -> None:
        """Reads the shard map from the node connected to (see ``Client``)."""
        if self._router is None:
            return
        call = self.queue.GetShardMap(pb.GetShardMapRequest(), metadata=self.metadata, timeout=10)
        self._router.learn_map(await self._call(call))

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh_shard_map()
        except (RaftqError, ValueError):
            pass

    def target(self, queue: str) -> tuple[pb_grpc.QueueAsyncStub, tuple[tuple[str, str], ...], str | None]:
        """Where ``queue``'s next call goes (see ``Client.target``)."""
        leader = self._router.leader(queue) if self._router is not None else None
        if leader is None:
            return self.queue, self.metadata, None
        addr, channel = leader
        return pb_grpc.QueueStub(cast(grpc.aio.Channel, channel)), (*self.metadata, DIRECT), addr

    async def observe(self, leader: str | None, error: grpc.RpcError) -> None:
        """Learns from a call through ``leader`` that failed with ``error``."""
        if self._router is None:
            return
        refresh, stale = _learn(self._router, leader, error)
        if stale is not None:
            await stale.close()
        if refresh:
            await self._refresh_quietly()

    def producer(self, retry: RetryPolicy | None = None) -> AsyncProducer:
        from raftq.producer import AsyncProducer

        return AsyncProducer(self, retry or RetryPolicy())

    async def stats(self, queue: str = "") -> list[pb.QueueStats]:
        response = await RetryPolicy().run_async(
            lambda: self.admin.Stats(pb.StatsRequest(queue=queue), metadata=self.metadata)
        )
        return list(response.queues)

    async def get_job(self, job_id: str) -> pb.Job:
        return await RetryPolicy().run_async(
            lambda: self.admin.GetJob(pb.JobRef(job_id=job_id), metadata=self.metadata)
        )

    async def fetch(
        self, queue: str, *, max_jobs: int = 1, lease: float | None = None, wait: float = 0.0, worker_id: str = ""
    ) -> list[Job]:
        request = _fetch_request(queue, max_jobs, lease, wait, worker_id)
        response = await RetryPolicy().run_async(lambda: self.queue.Fetch(request, metadata=self.metadata))
        return [job_from_leased(leased) for leased in response.jobs]

    async def ack(self, job: Job) -> None:
        request = pb.AckRequest(tokens=[job.token])
        _one_result((await self._call(self.queue.Ack(request, metadata=self.metadata))).results, job)

    async def nack(self, job: Job, error: str = "", *, retry_after: float | None = None, dead: bool = False) -> None:
        request = _nack_request(job, error, retry_after, dead)
        _one_result((await self._call(self.queue.Nack(request, metadata=self.metadata))).results, job)

    async def extend(self, job: Job, lease: float | None = None) -> float:
        request = pb.ExtendLeaseRequest(tokens=[job.token], lease_ms=_seconds_ms(lease))
        response = await self._call(self.queue.ExtendLease(request, metadata=self.metadata))
        job.lease_expires_at = _one_result(response.results, job).lease_expires_at_ms / 1000.0
        return job.lease_expires_at

    @staticmethod
    async def _call(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.RpcError as e:
            raise RaftqError.from_rpc(e) from None

    async def close(self) -> None:
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
        if self._router is not None:
            for channel in self._router.take_channels():
                await channel.close()
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
