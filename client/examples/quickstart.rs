//! Enqueue a few jobs and process them with a worker.
//!
//! Start a node first (`./scripts/node.sh`), then:
//!
//! ```sh
//! cargo run -p raftq-client --example quickstart
//! ```

use std::time::Duration;

use raftq_client::{Client, JobSpec, Worker};

#[tokio::main]
async fn main() -> Result<(), raftq_client::Error> {
    let addr = std::env::var("RAFTQ_ADDR").unwrap_or_else(|_| "http://127.0.0.1:7400".into());
    let client = Client::connect(&addr).await?;

    let producer = client.producer();
    let jobs = (1..=10)
        .map(|i| JobSpec::new(format!("email #{i}")).header("kind", "welcome"))
        .collect();
    let ids = producer.enqueue_batch("emails", jobs).await?;
    println!("enqueued {} jobs, first id {}", ids.len(), ids[0]);

    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::new(client, "emails")
        .concurrency(4)
        .lease(Duration::from_secs(10));
    worker
        .run_until(
            move |job| {
                let done = done_tx.clone();
                async move {
                    println!(
                        "sending {} (attempt {})",
                        String::from_utf8_lossy(&job.payload),
                        job.attempt
                    );
                    let _ = done.send(());
                    Ok::<(), String>(())
                }
            },
            async move {
                for _ in 0..10 {
                    done_rx.recv().await;
                }
            },
        )
        .await?;
    println!("all done");
    Ok(())
}
