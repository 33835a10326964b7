"""TLS with a token, permissions, a 3-node cluster whose leader dies
under a running worker, and calls routed straight to shard leaders."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from conftest import DevCerts, Node, binary, free_port, spawn_cluster, wait_for, wait_serving

from raftq import TLS, Client, Job, NewJob, RaftqError, RetryPolicy, Worker, shard_of
from raftq._proto.raftq.v1 import queue_pb2 as pb

PRODUCER_TOKEN = "producer-only-token"


def test_tls_and_tokens(tmp_path: Path, dev_certs: DevCerts) -> None:
    # The dev-certs auth file, plus a principal that may only produce.
    auth = dev_certs.dir / "auth.yaml"
    digest = hashlib.sha256(PRODUCER_TOKEN.encode()).hexdigest()
    auth.write_text(
        auth.read_text()
        + f"  - name: producer\n    tokens_sha256: ['{digest}']\n    grants:\n"
        + "      - { role: produce, queues: ['*'] }\n"
    )
    (node,) = spawn_cluster(tmp_path, 1, dev_certs.node_args())
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=dev_certs.ca.read_bytes())
        wait_serving(node, (("authorization", f"Bearer {dev_certs.token}"),), credentials)
        tls = TLS(ca_cert=dev_certs.ca)
        with Client(node.addr, tls=tls, token=dev_certs.token) as admin:
            admin.producer().enqueue("secure", "x")
            handled = threading.Event()
            worker = Worker(admin, "secure", lambda job: handled.set())
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            assert handled.wait(30)
            worker.stop()
            thread.join(10)

        with Client(f"https://{node.addr}", tls=tls) as anonymous:
            with pytest.raises(RaftqError) as no_token:
                anonymous.producer().enqueue("secure", "x")
            assert no_token.value.code == grpc.StatusCode.UNAUTHENTICATED

        with Client(node.addr, tls=tls, token=PRODUCER_TOKEN) as producer:
            producer.producer().enqueue("secure", "y")
            with pytest.raises(RaftqError) as denied:
                Worker(producer, "secure", lambda job: None).run()
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "consume" in denied.value.details and "producer" in denied.value.details

        with Client(node.addr) as plaintext:
            with pytest.raises(RaftqError) as refused:
                plaintext.producer(RetryPolicy.never()).enqueue("secure", "x")
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE

        with pytest.raises(ValueError, match="https"):
            Client(f"http://{node.addr}", tls=tls)
    finally:
        node.kill()


def leader_of_the_only_shard(nodes: list[Node]) -> Node:
    def find() -> Node | None:
        for n in nodes:
            status = n.status()
            if status is not None and status.shards and status.shards[0].has_leader:
                leader = status.shards[0].leader_id
                return next(x for x in nodes if x.id == leader)
        return None

    return wait_for("a leader", find)


def test_a_worker_carries_on_when_the_leader_dies(tmp_path: Path) -> None:
    nodes = spawn_cluster(tmp_path, 3, ["--shards", "1"])
    try:
        for n in nodes:
            wait_serving(n)
        leader = leader_of_the_only_shard(nodes)
        follower = next(n for n in nodes if n is not leader)
        with Client(follower.addr) as client:
            ids = client.producer().enqueue_many("ha", [NewJob(f"{i}") for i in range(400)])
            handled: set[str] = set()
            lock = threading.Lock()
            first_batch = threading.Event()

            def handle(job: Job) -> None:
                with lock:
                    handled.add(job.id)
                    if len(handled) >= 50:
                        first_batch.set()
                time.sleep(0.005)  # the work itself: the kill lands mid-run

            worker = Worker(client, "ha", handle, concurrency=4, lease=2.0)
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            assert first_batch.wait(60)
            leader.kill()
            # More jobs while the cluster elects a new leader.
            ids += client.producer().enqueue_many("ha", [NewJob(f"late {i}") for i in range(100)])

            def all_acked() -> bool:
                with lock:
                    if not handled.issuperset(ids):
                        return False
                found = [q for q in client.stats("ha") if q.queue == "ha"]
                return bool(found) and found[0].ready == 0 and found[0].leased == 0

            wait_for("every job handled and acked after the leader died", all_acked, timeout=90)
            worker.stop()
            thread.join(15)
            assert not thread.is_alive()
    finally:
        for n in nodes:
            n.kill()


def forwarded(http_addrs: list[str]) -> float:
    """The sum of raftq_forwarded_requests_total over the nodes."""
    total = 0.0
    for addr in http_addrs:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("raftq_forwarded_requests_total{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def queue_on(shard: int, shards: int, tag: str) -> str:
    return next(f"{tag}-{i}" for i in range(10_000) if shard_of(f"{tag}-{i}", shards) == shard)


def test_calls_go_straight_to_the_shard_leaders(tmp_path: Path) -> None:
    shards = 4
    peers = [free_port() for _ in range(3)]
    http_addrs = [free_port() for _ in range(3)]
    members = ",".join(f"{i + 1}={p}" for i, p in enumerate(peers))
    nodes = [
        Node(
            i + 1,
            free_port(),
            peers[i],
            tmp_path / f"n{i + 1}",
            members,
            ["--shards", str(shards), "--http-listen", http_addrs[i]],
        )
        for i in range(3)
    ]
    for n in nodes:
        n.start()
    try:
        for n in nodes:
            wait_serving(n)
        # Every node knows every leader's client address; the SDK's hash is the nodes'.
        for n in nodes:
            with Client(n.addr, route_to_leaders=False) as plain:

                def complete(plain: Client = plain) -> bool | None:
                    request = pb.GetShardMapRequest(queues=["emails", "q-17"])
                    shard_map = plain.queue.GetShardMap(request, metadata=plain.metadata)
                    if len(shard_map.shards) != shards or any(not s.leader_addr for s in shard_map.shards):
                        return None
                    for queue, shard in shard_map.queues.items():
                        assert shard_of(queue, shards) == shard, queue
                    return True

                wait_for("a complete shard map", complete)
        with Client(nodes[0].addr) as client:
            client.refresh_shard_map()
            before = forwarded(http_addrs)
            for shard in range(shards):
                queue = queue_on(shard, shards, "routed")
                client.producer().enqueue_many(queue, [NewJob("x") for _ in range(5)])
                worker = Worker(client, queue, lambda job: None, concurrency=4)
                thread = threading.Thread(target=worker.run, daemon=True)
                thread.start()

                def acked(queue: str = queue) -> bool:
                    found = [q for q in client.stats(queue) if q.queue == queue]
                    return bool(found) and found[0].acked_total == 5

                wait_for("the queue's jobs acked", acked)
                worker.stop()
                thread.join(15)
            assert forwarded(http_addrs) == before, "a routing client has no request forwarded"
        # Without routing, node 1 forwards what it does not lead.
        with Client(nodes[0].addr, route_to_leaders=False) as plain:
            for shard in range(shards):
                plain.producer().enqueue(queue_on(shard, shards, "plain"), "x")
        status = nodes[0].status()
        led = sum(1 for s in status.shards if s.role == "leader") if status else 0
        assert forwarded(http_addrs) - before == shards - led
    finally:
        for n in nodes:
            n.kill()


def test_queues_are_routed_to_their_shards_after_the_shard_count_grows(tmp_path: Path) -> None:
    """Queues that held jobs when the count grew stay on their shard (the
    map pins them); the SDK sends them there, and new queues by the new
    hash, with nothing forwarded."""
    peers = [free_port() for _ in range(3)]
    http_addrs = [free_port() for _ in range(3)]
    members = ",".join(f"{i + 1}={p}" for i, p in enumerate(peers))
    extra = ["--shards", "2", "--replication-factor", "3"]
    nodes = [
        Node(i + 1, free_port(), peers[i], tmp_path / f"n{i + 1}", members, [*extra, "--http-listen", http_addrs[i]])
        for i in range(3)
    ]
    for n in nodes:
        n.start()
    try:
        for n in nodes:
            wait_serving(n)
        moving = [q for q in (f"parked-{i}" for i in range(200)) if shard_of(q, 2) != shard_of(q, 4)][:8]
        with Client(nodes[0].addr) as client:
            for queue in moving:
                client.producer().enqueue(queue, "before")
            grown = subprocess.run(
                [str(binary("raftq")), "--peer-addr", peers[1], "cluster", "grow-shards", "4"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert grown.returncode == 0, grown.stderr
            # The client's map is from before: a new queue on a new shard
            # still lands there (the node's answer makes it read the map).
            fresh = queue_on(3, 4, "fresh")
            assert client.producer().enqueue(fresh, "x").startswith("3-")

            def complete() -> bool | None:
                request = pb.GetShardMapRequest(queues=moving)
                shard_map = client.queue.GetShardMap(request, metadata=client.metadata)
                if shard_map.shard_count != 4 or any(not s.leader_addr for s in shard_map.shards):
                    return None
                return True

            wait_for("every node to know the 4 shards' leaders", complete)
            client.refresh_shard_map()
            before = forwarded(http_addrs)
            for queue in moving:
                job_id = client.producer().enqueue(queue, "after")
                assert job_id.startswith(f"{shard_of(queue, 2)}-"), (queue, job_id)
            for shard in range(4):
                job_id = client.producer().enqueue(queue_on(shard, 4, "new"), "x")
                assert job_id.startswith(f"{shard}-"), job_id
            assert forwarded(http_addrs) == before, "a routing client has no request forwarded"
    finally:
        for n in nodes:
            n.kill()
