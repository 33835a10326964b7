"""TLS with a token, permissions, and a 3-node cluster whose leader dies
under a running worker."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import grpc
import pytest
from conftest import DevCerts, Node, spawn_cluster, wait_for, wait_serving

from raftq import TLS, Client, Job, NewJob, RaftqError, RetryPolicy, Worker

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
