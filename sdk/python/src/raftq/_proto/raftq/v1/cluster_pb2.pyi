from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GrowShardsRequest(_message.Message):
    __slots__ = ("shard_count",)
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    shard_count: int
    def __init__(self, shard_count: _Optional[int] = ...) -> None: ...

class GrowProgress(_message.Message):
    __slots__ = ("step", "detail")
    STEP_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    step: str
    detail: str
    def __init__(self, step: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class FenceShardRequest(_message.Message):
    __slots__ = ("shard", "shard_count")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    shard: int
    shard_count: int
    def __init__(self, shard: _Optional[int] = ..., shard_count: _Optional[int] = ...) -> None: ...

class FenceShardResponse(_message.Message):
    __slots__ = ("pinned",)
    PINNED_FIELD_NUMBER: _ClassVar[int]
    pinned: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pinned: _Optional[_Iterable[str]] = ...) -> None: ...

class QueueRouting(_message.Message):
    __slots__ = ("version", "shard_count", "pins")
    class PinsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    version: int
    shard_count: int
    pins: _containers.ScalarMap[str, int]
    def __init__(self, version: _Optional[int] = ..., shard_count: _Optional[int] = ..., pins: _Optional[_Mapping[str, int]] = ...) -> None: ...

class NodeSpec(_message.Message):
    __slots__ = ("node_id", "addr", "zone", "draining")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    addr: str
    zone: str
    draining: bool
    def __init__(self, node_id: _Optional[int] = ..., addr: _Optional[str] = ..., zone: _Optional[str] = ..., draining: _Optional[bool] = ...) -> None: ...

class SetNodesRequest(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeSpec]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeSpec, _Mapping]]] = ...) -> None: ...

class GetPlacementRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodePlacement(_message.Message):
    __slots__ = ("node_id", "replicas", "leads")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEADS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    replicas: int
    leads: int
    def __init__(self, node_id: _Optional[int] = ..., replicas: _Optional[int] = ..., leads: _Optional[int] = ...) -> None: ...

class MoveUnderWay(_message.Message):
    __slots__ = ("shard", "add_node", "remove_node", "phase")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ADD_NODE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_NODE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    shard: int
    add_node: int
    remove_node: int
    phase: str
    def __init__(self, shard: _Optional[int] = ..., add_node: _Optional[int] = ..., remove_node: _Optional[int] = ..., phase: _Optional[str] = ...) -> None: ...

class PlacementStatus(_message.Message):
    __slots__ = ("coordinator", "replication_factor", "declared", "nodes", "moves", "balanced")
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DECLARED_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    MOVES_FIELD_NUMBER: _ClassVar[int]
    BALANCED_FIELD_NUMBER: _ClassVar[int]
    coordinator: int
    replication_factor: int
    declared: _containers.RepeatedCompositeFieldContainer[NodeSpec]
    nodes: _containers.RepeatedCompositeFieldContainer[NodePlacement]
    moves: _containers.RepeatedCompositeFieldContainer[MoveUnderWay]
    balanced: bool
    def __init__(self, coordinator: _Optional[int] = ..., replication_factor: _Optional[int] = ..., declared: _Optional[_Iterable[_Union[NodeSpec, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodePlacement, _Mapping]]] = ..., moves: _Optional[_Iterable[_Union[MoveUnderWay, _Mapping]]] = ..., balanced: _Optional[bool] = ...) -> None: ...

class MoveReplicaRequest(_message.Message):
    __slots__ = ("shard", "add_node", "add_addr", "remove_node", "stall_after_ms")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ADD_NODE_FIELD_NUMBER: _ClassVar[int]
    ADD_ADDR_FIELD_NUMBER: _ClassVar[int]
    REMOVE_NODE_FIELD_NUMBER: _ClassVar[int]
    STALL_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    shard: int
    add_node: int
    add_addr: str
    remove_node: int
    stall_after_ms: int
    def __init__(self, shard: _Optional[int] = ..., add_node: _Optional[int] = ..., add_addr: _Optional[str] = ..., remove_node: _Optional[int] = ..., stall_after_ms: _Optional[int] = ...) -> None: ...

class MoveProgress(_message.Message):
    __slots__ = ("phase", "detail", "learner_lag")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LEARNER_LAG_FIELD_NUMBER: _ClassVar[int]
    phase: str
    detail: str
    learner_lag: int
    def __init__(self, phase: _Optional[str] = ..., detail: _Optional[str] = ..., learner_lag: _Optional[int] = ...) -> None: ...

class OpenReplicaRequest(_message.Message):
    __slots__ = ("shard", "create_with")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    CREATE_WITH_FIELD_NUMBER: _ClassVar[int]
    shard: int
    create_with: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, shard: _Optional[int] = ..., create_with: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class OpenReplicaResponse(_message.Message):
    __slots__ = ("opened",)
    OPENED_FIELD_NUMBER: _ClassVar[int]
    opened: bool
    def __init__(self, opened: _Optional[bool] = ...) -> None: ...

class DropReplicaRequest(_message.Message):
    __slots__ = ("shard",)
    SHARD_FIELD_NUMBER: _ClassVar[int]
    shard: int
    def __init__(self, shard: _Optional[int] = ...) -> None: ...

class DropReplicaResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("node_id", "addr", "voter", "matched_index")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    MATCHED_INDEX_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    addr: str
    voter: bool
    matched_index: int
    def __init__(self, node_id: _Optional[int] = ..., addr: _Optional[str] = ..., voter: _Optional[bool] = ..., matched_index: _Optional[int] = ...) -> None: ...

class ShardStatus(_message.Message):
    __slots__ = ("shard", "leader_id", "has_leader", "term", "commit_index", "applied_index", "last_log_index", "members", "role", "epoch")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    shard: int
    leader_id: int
    has_leader: bool
    term: int
    commit_index: int
    applied_index: int
    last_log_index: int
    members: _containers.RepeatedCompositeFieldContainer[Member]
    role: str
    epoch: int
    def __init__(self, shard: _Optional[int] = ..., leader_id: _Optional[int] = ..., has_leader: _Optional[bool] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., last_log_index: _Optional[int] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., role: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ("routing_version",)
    ROUTING_VERSION_FIELD_NUMBER: _ClassVar[int]
    routing_version: int
    def __init__(self, routing_version: _Optional[int] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("node_id", "addr", "shards", "client_addr", "routing_version", "routing")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDR_FIELD_NUMBER: _ClassVar[int]
    ROUTING_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    addr: str
    shards: _containers.RepeatedCompositeFieldContainer[ShardStatus]
    client_addr: str
    routing_version: int
    routing: QueueRouting
    def __init__(self, node_id: _Optional[int] = ..., addr: _Optional[str] = ..., shards: _Optional[_Iterable[_Union[ShardStatus, _Mapping]]] = ..., client_addr: _Optional[str] = ..., routing_version: _Optional[int] = ..., routing: _Optional[_Union[QueueRouting, _Mapping]] = ...) -> None: ...

class InitializeRequest(_message.Message):
    __slots__ = ("bootstrap_joining_node",)
    BOOTSTRAP_JOINING_NODE_FIELD_NUMBER: _ClassVar[int]
    bootstrap_joining_node: bool
    def __init__(self, bootstrap_joining_node: _Optional[bool] = ...) -> None: ...

class AddLearnerRequest(_message.Message):
    __slots__ = ("node_id", "addr", "shard", "timeout_ms", "no_wait")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    NO_WAIT_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    addr: str
    shard: int
    timeout_ms: int
    no_wait: bool
    def __init__(self, node_id: _Optional[int] = ..., addr: _Optional[str] = ..., shard: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., no_wait: _Optional[bool] = ...) -> None: ...

class ChangeMembershipRequest(_message.Message):
    __slots__ = ("voters", "retain", "shard")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    RETAIN_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    retain: bool
    shard: int
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., retain: _Optional[bool] = ..., shard: _Optional[int] = ...) -> None: ...

class RemoveLearnerRequest(_message.Message):
    __slots__ = ("node_id", "shard")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    shard: int
    def __init__(self, node_id: _Optional[int] = ..., shard: _Optional[int] = ...) -> None: ...

class StepDownRequest(_message.Message):
    __slots__ = ("timeout_ms", "drain_workers", "shard")
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    DRAIN_WORKERS_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    timeout_ms: int
    drain_workers: bool
    shard: int
    def __init__(self, timeout_ms: _Optional[int] = ..., drain_workers: _Optional[bool] = ..., shard: _Optional[int] = ...) -> None: ...

class ShardHandoff(_message.Message):
    __slots__ = ("shard", "new_leader_id")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    NEW_LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    shard: int
    new_leader_id: int
    def __init__(self, shard: _Optional[int] = ..., new_leader_id: _Optional[int] = ...) -> None: ...

class StepDownResponse(_message.Message):
    __slots__ = ("shards",)
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[ShardHandoff]
    def __init__(self, shards: _Optional[_Iterable[_Union[ShardHandoff, _Mapping]]] = ...) -> None: ...

class CampaignRequest(_message.Message):
    __slots__ = ("shard", "term", "after_ms")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    shard: int
    term: int
    after_ms: int
    def __init__(self, shard: _Optional[int] = ..., term: _Optional[int] = ..., after_ms: _Optional[int] = ...) -> None: ...

class CampaignReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("shard", "data", "format")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    shard: int
    data: bytes
    format: int
    def __init__(self, shard: _Optional[int] = ..., data: _Optional[bytes] = ..., format: _Optional[int] = ...) -> None: ...
