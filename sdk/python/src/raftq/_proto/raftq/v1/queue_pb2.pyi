from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_SCHEDULED: _ClassVar[JobState]
    JOB_STATE_READY: _ClassVar[JobState]
    JOB_STATE_LEASED: _ClassVar[JobState]
    JOB_STATE_DEAD: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_SCHEDULED: JobState
JOB_STATE_READY: JobState
JOB_STATE_LEASED: JobState
JOB_STATE_DEAD: JobState

class GetShardMapRequest(_message.Message):
    __slots__ = ("queues",)
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, queues: _Optional[_Iterable[str]] = ...) -> None: ...

class ShardRoute(_message.Message):
    __slots__ = ("shard", "leader_id", "leader_addr", "term", "members", "epoch")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDR_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    shard: int
    leader_id: int
    leader_addr: str
    term: int
    members: _containers.RepeatedScalarFieldContainer[int]
    epoch: int
    def __init__(self, shard: _Optional[int] = ..., leader_id: _Optional[int] = ..., leader_addr: _Optional[str] = ..., term: _Optional[int] = ..., members: _Optional[_Iterable[int]] = ..., epoch: _Optional[int] = ...) -> None: ...

class NodeAddress(_message.Message):
    __slots__ = ("node_id", "client_addr")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDR_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    client_addr: str
    def __init__(self, node_id: _Optional[int] = ..., client_addr: _Optional[str] = ...) -> None: ...

class ShardMap(_message.Message):
    __slots__ = ("shard_count", "shards", "nodes", "queues", "node_id", "pinned", "routing_version")
    class QueuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class PinnedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    ROUTING_VERSION_FIELD_NUMBER: _ClassVar[int]
    shard_count: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardRoute]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeAddress]
    queues: _containers.ScalarMap[str, int]
    node_id: int
    pinned: _containers.ScalarMap[str, int]
    routing_version: int
    def __init__(self, shard_count: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardRoute, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodeAddress, _Mapping]]] = ..., queues: _Optional[_Mapping[str, int]] = ..., node_id: _Optional[int] = ..., pinned: _Optional[_Mapping[str, int]] = ..., routing_version: _Optional[int] = ...) -> None: ...

class Backoff(_message.Message):
    __slots__ = ("initial_ms", "max_ms", "multiplier")
    INITIAL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    initial_ms: int
    max_ms: int
    multiplier: float
    def __init__(self, initial_ms: _Optional[int] = ..., max_ms: _Optional[int] = ..., multiplier: _Optional[float] = ...) -> None: ...

class NewJob(_message.Message):
    __slots__ = ("payload", "headers", "priority", "delay_ms", "run_at_ms", "max_attempts", "backoff", "idempotency_key")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    headers: _containers.ScalarMap[str, str]
    priority: int
    delay_ms: int
    run_at_ms: int
    max_attempts: int
    backoff: Backoff
    idempotency_key: str
    def __init__(self, payload: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., delay_ms: _Optional[int] = ..., run_at_ms: _Optional[int] = ..., max_attempts: _Optional[int] = ..., backoff: _Optional[_Union[Backoff, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class EnqueueRequest(_message.Message):
    __slots__ = ("queue", "jobs")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    jobs: _containers.RepeatedCompositeFieldContainer[NewJob]
    def __init__(self, queue: _Optional[str] = ..., jobs: _Optional[_Iterable[_Union[NewJob, _Mapping]]] = ...) -> None: ...

class EnqueueResponse(_message.Message):
    __slots__ = ("job_ids", "duplicate")
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    duplicate: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, job_ids: _Optional[_Iterable[str]] = ..., duplicate: _Optional[_Iterable[bool]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "queue", "payload", "headers", "priority", "state", "attempt", "max_attempts", "enqueued_at_ms", "due_at_ms", "last_error", "idempotency_key", "worker_id")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    payload: bytes
    headers: _containers.ScalarMap[str, str]
    priority: int
    state: JobState
    attempt: int
    max_attempts: int
    enqueued_at_ms: int
    due_at_ms: int
    last_error: str
    idempotency_key: str
    worker_id: str
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ..., payload: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., enqueued_at_ms: _Optional[int] = ..., due_at_ms: _Optional[int] = ..., last_error: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., worker_id: _Optional[str] = ...) -> None: ...

class LeaseToken(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class LeasedJob(_message.Message):
    __slots__ = ("job", "token", "lease_expires_at_ms")
    JOB_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    token: LeaseToken
    lease_expires_at_ms: int
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., token: _Optional[_Union[LeaseToken, _Mapping]] = ..., lease_expires_at_ms: _Optional[int] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("queue", "worker_id", "max_jobs", "lease_ms", "wait_ms")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    worker_id: str
    max_jobs: int
    lease_ms: int
    wait_ms: int
    def __init__(self, queue: _Optional[str] = ..., worker_id: _Optional[str] = ..., max_jobs: _Optional[int] = ..., lease_ms: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[LeasedJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[LeasedJob, _Mapping]]] = ...) -> None: ...

class TokenResult(_message.Message):
    __slots__ = ("token", "code", "message", "lease_expires_at_ms")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    token: LeaseToken
    code: int
    message: str
    lease_expires_at_ms: int
    def __init__(self, token: _Optional[_Union[LeaseToken, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., lease_expires_at_ms: _Optional[int] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[LeaseToken]
    def __init__(self, tokens: _Optional[_Iterable[_Union[LeaseToken, _Mapping]]] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TokenResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TokenResult, _Mapping]]] = ...) -> None: ...

class NackItem(_message.Message):
    __slots__ = ("token", "retry_delay_ms", "error", "dead")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    token: LeaseToken
    retry_delay_ms: int
    error: str
    dead: bool
    def __init__(self, token: _Optional[_Union[LeaseToken, _Mapping]] = ..., retry_delay_ms: _Optional[int] = ..., error: _Optional[str] = ..., dead: _Optional[bool] = ...) -> None: ...

class NackRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[NackItem]
    def __init__(self, items: _Optional[_Iterable[_Union[NackItem, _Mapping]]] = ...) -> None: ...

class NackResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TokenResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TokenResult, _Mapping]]] = ...) -> None: ...

class ExtendLeaseRequest(_message.Message):
    __slots__ = ("tokens", "lease_ms")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[LeaseToken]
    lease_ms: int
    def __init__(self, tokens: _Optional[_Iterable[_Union[LeaseToken, _Mapping]]] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class ExtendLeaseResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TokenResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TokenResult, _Mapping]]] = ...) -> None: ...

class WorkerOpen(_message.Message):
    __slots__ = ("queue", "worker_id", "lease_ms")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    worker_id: str
    lease_ms: int
    def __init__(self, queue: _Optional[str] = ..., worker_id: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class WorkerFrame(_message.Message):
    __slots__ = ("open", "acks", "nacks", "extends", "credit")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    NACKS_FIELD_NUMBER: _ClassVar[int]
    EXTENDS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    open: WorkerOpen
    acks: _containers.RepeatedCompositeFieldContainer[LeaseToken]
    nacks: _containers.RepeatedCompositeFieldContainer[NackItem]
    extends: _containers.RepeatedCompositeFieldContainer[LeaseToken]
    credit: int
    def __init__(self, open: _Optional[_Union[WorkerOpen, _Mapping]] = ..., acks: _Optional[_Iterable[_Union[LeaseToken, _Mapping]]] = ..., nacks: _Optional[_Iterable[_Union[NackItem, _Mapping]]] = ..., extends: _Optional[_Iterable[_Union[LeaseToken, _Mapping]]] = ..., credit: _Optional[int] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("jobs", "results")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[LeasedJob]
    results: _containers.RepeatedCompositeFieldContainer[TokenResult]
    def __init__(self, jobs: _Optional[_Iterable[_Union[LeasedJob, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[TokenResult, _Mapping]]] = ...) -> None: ...

class QueueRef(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class QueueConfig(_message.Message):
    __slots__ = ("default_lease_ms", "default_max_attempts", "default_backoff", "dedup_window_ms")
    DEFAULT_LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    DEDUP_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    default_lease_ms: int
    default_max_attempts: int
    default_backoff: Backoff
    dedup_window_ms: int
    def __init__(self, default_lease_ms: _Optional[int] = ..., default_max_attempts: _Optional[int] = ..., default_backoff: _Optional[_Union[Backoff, _Mapping]] = ..., dedup_window_ms: _Optional[int] = ...) -> None: ...

class QueueInfo(_message.Message):
    __slots__ = ("queue", "paused", "config")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    queue: str
    paused: bool
    config: QueueConfig
    def __init__(self, queue: _Optional[str] = ..., paused: _Optional[bool] = ..., config: _Optional[_Union[QueueConfig, _Mapping]] = ...) -> None: ...

class SetQueueConfigRequest(_message.Message):
    __slots__ = ("queue", "default_lease_ms", "default_max_attempts", "default_backoff", "dedup_window_ms")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    DEDUP_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    default_lease_ms: int
    default_max_attempts: int
    default_backoff: Backoff
    dedup_window_ms: int
    def __init__(self, queue: _Optional[str] = ..., default_lease_ms: _Optional[int] = ..., default_max_attempts: _Optional[int] = ..., default_backoff: _Optional[_Union[Backoff, _Mapping]] = ..., dedup_window_ms: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("queue", "local")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    queue: str
    local: bool
    def __init__(self, queue: _Optional[str] = ..., local: _Optional[bool] = ...) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("queue", "ready", "scheduled", "leased", "dead", "paused", "enqueued_total", "acked_total", "nacked_total", "expired_total", "dead_total")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACKED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    NACKED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DEAD_TOTAL_FIELD_NUMBER: _ClassVar[int]
    queue: str
    ready: int
    scheduled: int
    leased: int
    dead: int
    paused: bool
    enqueued_total: int
    acked_total: int
    nacked_total: int
    expired_total: int
    dead_total: int
    def __init__(self, queue: _Optional[str] = ..., ready: _Optional[int] = ..., scheduled: _Optional[int] = ..., leased: _Optional[int] = ..., dead: _Optional[int] = ..., paused: _Optional[bool] = ..., enqueued_total: _Optional[int] = ..., acked_total: _Optional[int] = ..., nacked_total: _Optional[int] = ..., expired_total: _Optional[int] = ..., dead_total: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("queues",)
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueStats]
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueStats, _Mapping]]] = ...) -> None: ...

class PurgeResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("queue", "state", "job_id", "header_key", "header_value", "idempotency_key", "error_contains", "limit", "before", "include_payload", "max_scan")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_KEY_FIELD_NUMBER: _ClassVar[int]
    HEADER_VALUE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ERROR_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MAX_SCAN_FIELD_NUMBER: _ClassVar[int]
    queue: str
    state: JobState
    job_id: str
    header_key: str
    header_value: str
    idempotency_key: str
    error_contains: str
    limit: int
    before: str
    include_payload: bool
    max_scan: int
    def __init__(self, queue: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., job_id: _Optional[str] = ..., header_key: _Optional[str] = ..., header_value: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., error_contains: _Optional[str] = ..., limit: _Optional[int] = ..., before: _Optional[str] = ..., include_payload: _Optional[bool] = ..., max_scan: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_before", "scanned")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_before: str
    scanned: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_before: _Optional[str] = ..., scanned: _Optional[int] = ...) -> None: ...

class ListDeadRequest(_message.Message):
    __slots__ = ("queue", "limit", "after")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    queue: str
    limit: int
    after: str
    def __init__(self, queue: _Optional[str] = ..., limit: _Optional[int] = ..., after: _Optional[str] = ...) -> None: ...

class ListDeadResponse(_message.Message):
    __slots__ = ("jobs", "next_after")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_after: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_after: _Optional[str] = ...) -> None: ...

class DeadSelector(_message.Message):
    __slots__ = ("queue", "job_ids")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, queue: _Optional[str] = ..., job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...
