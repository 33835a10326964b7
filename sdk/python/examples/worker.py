"""A producer and a worker against a local node (./scripts/node.sh).

python examples/worker.py [address]
"""

import logging
import signal
import sys

from raftq import Client, Job, JobFailed, Worker


def handle(job: Job) -> None:
    if job.text == "poison":
        raise JobFailed("cannot handle this one", dead=True)
    print(f"{job.id} attempt {job.attempt}: {job.text}")


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    client = Client(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7400")
    producer = client.producer()
    for i in range(5):
        producer.enqueue("emails", f"hello {i}", headers={"example": "true"})
    worker = Worker(client, "emails", handle, concurrency=4)
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    print("working; Ctrl-C stops after the running jobs finish")
    worker.run()


if __name__ == "__main__":
    main()
