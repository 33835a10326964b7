//! A producer and a worker running against a cluster while it changes,
//! and the ledger that shows what they saw: every acknowledged enqueue
//! must be delivered and acked, and no job handed out again after its ack
//! succeeded.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftq_client::{proto as pb, Client, JobSpec};
use tokio::task::JoinHandle;

#[derive(Default, Debug)]
pub struct Ledger {
    pub enqueued: BTreeSet<String>,
    pub acked: BTreeSet<String>,
    /// Jobs handed out again after their ack succeeded.
    pub after_ack: Vec<String>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    producer: JoinHandle<()>,
    worker: JoinHandle<()>,
}

impl Load {
    /// Enqueues round-robin over `queues` (each job with an idempotency
    /// key) and fetches and acks them, both through `client`.
    pub fn start(client: &Client, queues: Vec<String>, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger: Arc<Mutex<Ledger>> = Arc::default();
        let producer = {
            let (stop, ledger, queues) = (stop.clone(), ledger.clone(), queues.clone());
            let producer = client.producer();
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let queue = &queues[i as usize % queues.len()];
                    let key = format!("{tag}-{i}");
                    let spec = JobSpec::new(key.clone()).idempotency_key(key);
                    if let Ok(id) = producer.enqueue(queue, spec).await {
                        ledger.lock().unwrap().enqueued.insert(id);
                    }
                    i += 1;
                }
            })
        };
        let worker = {
            let (stop, ledger, client) = (stop.clone(), ledger.clone(), client.clone());
            let worker_id = tag.to_string();
            tokio::spawn(async move {
                // After the producer stops, runs until nothing came for
                // longer than a lease, so a job whose ack failed comes
                // back first.
                let mut last_job = tokio::time::Instant::now();
                while !(stop.load(Ordering::SeqCst) && last_job.elapsed() > Duration::from_secs(8))
                {
                    let mut got = 0;
                    for queue in &queues {
                        let request = pb::FetchRequest {
                            queue: queue.clone(),
                            worker_id: worker_id.clone(),
                            max_jobs: 100,
                            lease_ms: Some(5_000),
                            wait_ms: 0,
                        };
                        let Ok(jobs) = client.queue().fetch(request).await else {
                            continue;
                        };
                        let jobs = jobs.into_inner().jobs;
                        got += jobs.len();
                        let ids: Vec<String> = jobs
                            .iter()
                            .map(|j| j.job.as_ref().map(|j| j.id.clone()).unwrap_or_default())
                            .collect();
                        {
                            let mut l = ledger.lock().unwrap();
                            let again: Vec<String> = ids
                                .iter()
                                .filter(|id| l.acked.contains(*id))
                                .cloned()
                                .collect();
                            l.after_ack.extend(again);
                        }
                        let tokens = jobs.iter().filter_map(|j| j.token.clone()).collect();
                        if let Ok(answer) = client.queue().ack(pb::AckRequest { tokens }).await {
                            let mut l = ledger.lock().unwrap();
                            for (id, result) in ids.iter().zip(&answer.into_inner().results) {
                                if result.code == 0 {
                                    l.acked.insert(id.clone());
                                }
                            }
                        }
                    }
                    if got > 0 {
                        last_job = tokio::time::Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Load {
            stop,
            ledger,
            producer,
            worker,
        }
    }

    /// How many enqueues were acknowledged so far.
    pub fn enqueued(&self) -> usize {
        self.ledger.lock().unwrap().enqueued.len()
    }

    /// Stops the producer, lets the worker drain, and checks the ledger:
    /// more than `at_least` enqueued, none lost, none after its ack.
    pub async fn finish(self, at_least: usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.producer.await.unwrap();
        tokio::time::timeout(Duration::from_secs(120), self.worker)
            .await
            .expect("the worker drains the queues")
            .unwrap();
        let ledger = self.ledger.lock().unwrap();
        assert!(
            ledger.enqueued.len() > at_least,
            "only {} enqueued",
            ledger.enqueued.len()
        );
        let lost: Vec<_> = ledger.enqueued.difference(&ledger.acked).collect();
        assert!(
            lost.is_empty(),
            "acknowledged enqueues never delivered and acked: {lost:?}"
        );
        assert!(
            ledger.after_ack.is_empty(),
            "handed out again after a successful ack: {:?}",
            ledger.after_ack
        );
    }
}
