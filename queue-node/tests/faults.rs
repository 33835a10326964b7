//! Faults under load: real `queue-node` processes behind fault-injecting
//! proxies, producers and workers recording a history, and a checker that
//! fails the run on any lost, doubled, stale or unfinished job.
//!
//! ```text
//! cargo test --test faults                      # every scenario, CI size
//! cargo test --test faults -- partition         # scenarios whose name matches
//! cargo test --release --test faults -- --soak  # ten times the faults, longer holds
//! ```
//!
//! This test has its own `main` (no libtest) so it can take `--soak`.

mod chaos;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chaos::history::{check, Event, FinalStates, History, Op, Settle};
use chaos::scenarios::{self, Size};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let soak = args.iter().any(|a| a == "--soak");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    if args.iter().any(|a| a == "--list") {
        println!("checker: test");
        for s in scenarios::ALL.iter().filter(|s| selected(s.name)) {
            println!("{}: test", s.name);
        }
        return ExitCode::SUCCESS;
    }
    let size = if soak { Size::soak() } else { Size::ci() };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut failed = Vec::new();
    if selected("checker") {
        match checker_catches_violations() {
            Ok(()) => println!("checker ... ok (flags every kind of violation it is shown)"),
            Err(e) => {
                println!("checker ... FAILED: {e}");
                failed.push("checker".to_string());
            }
        }
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    for s in scenarios::ALL.iter().filter(|s| selected(s.name)) {
        if s.needs_root && !root {
            println!(
                "{} ... skipped: mounting its small disk (a tmpfs) needs root",
                s.name
            );
            continue;
        }
        println!(
            "{} ({} nodes, {} shards{}): {}",
            s.name,
            s.nodes,
            s.shards,
            if soak { ", soak" } else { "" },
            s.what
        );
        match runtime.block_on(scenarios::run(s, size)) {
            Ok(o) => {
                let r = &o.report;
                println!(
                    "  {} enqueues acknowledged of {} keys sent ({} failed tries), {} deliveries ({} redeliveries), {} acked, {} dead; {} faults; {} lost; {} violations; {:.1} s{}",
                    r.acknowledged,
                    r.enqueued,
                    o.enqueue_errors,
                    r.deliveries,
                    r.redeliveries,
                    r.acked,
                    r.dead,
                    o.faults,
                    r.lost(),
                    r.violations.len(),
                    o.took.as_secs_f64(),
                    if o.notes.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", o.notes.join("; "))
                    }
                );
                for v in r.violations.iter().take(20) {
                    println!("  VIOLATION {v}");
                }
                if r.violations.is_empty() {
                    println!("{} ... ok", s.name);
                } else {
                    println!("{} ... FAILED", s.name);
                    failed.push(s.name.to_string());
                }
            }
            Err(e) => {
                println!("{} ... FAILED: {e:#}", s.name);
                failed.push(s.name.to_string());
            }
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

/// The checker must flag each kind of violation in a history built to
/// contain it, and pass a clean one — a checker that never fails proves
/// nothing.
fn checker_catches_violations() -> Result<(), String> {
    let lease = 2_000;
    let deliver = |h: &History, job: &str, attempt: u32, expires: i64| {
        h.record(Op::Deliver {
            worker: "w".into(),
            key: format!("k-{job}"),
            job: job.into(),
            attempt,
            expires_ms: expires,
            lease_ms: lease,
            fetch_sent: Instant::now(),
        })
    };
    let enqueue = |h: &History, job: &str| {
        h.record(Op::EnqueueInvoke {
            key: format!("k-{job}"),
        });
        h.record(Op::EnqueueOk {
            key: format!("k-{job}"),
            job: job.into(),
        });
    };
    let settle = |h: &History, job: &str, attempt: u32, kind: Settle| {
        h.record(Op::SettleInvoke {
            job: job.into(),
            attempt,
            kind,
        });
        h.record(Op::SettleOk {
            job: job.into(),
            attempt,
            kind,
        });
    };
    let gone =
        |jobs: &[&str]| -> FinalStates { jobs.iter().map(|j| (j.to_string(), None)).collect() };
    let expect = |name: &str, events: Vec<Event>, finals: FinalStates, needle: &str| {
        let r = check(&events, &finals);
        let hit = r.violations.iter().any(|v| v.starts_with(needle));
        match (needle.is_empty(), hit, r.violations.is_empty()) {
            (true, _, true) | (false, true, _) => Ok(()),
            _ => Err(format!(
                "{name}: expected {:?}, got {:?}",
                if needle.is_empty() {
                    "no violation"
                } else {
                    needle
                },
                r.violations
            )),
        }
    };

    // Clean: enqueued, delivered, retried after the lease ran out, acked.
    let h = History::default();
    enqueue(&h, "a");
    deliver(&h, "a", 1, 10_000);
    h.record(Op::SettleInvoke {
        job: "a".into(),
        attempt: 1,
        kind: Settle::Ack,
    });
    deliver(&h, "a", 2, 10_000 + lease);
    h.record(Op::SettleRefused {
        job: "a".into(),
        attempt: 1,
        kind: Settle::Ack,
        code: 9,
    });
    settle(&h, "a", 2, Settle::Ack);
    // `a`'s second lease was granted right as the first ran out, but this
    // history is built in no time: only judge the cluster's clock here.
    let events: Vec<Event> = h.snapshot();
    let r = check(&events, &gone(&["a"]));
    if r.violations
        .iter()
        .any(|v| !v.starts_with("lease cut short"))
    {
        return Err(format!("clean history flagged: {:?}", r.violations));
    }

    // Lost: acknowledged, never delivered.
    let h = History::default();
    enqueue(&h, "b");
    expect("lost", h.snapshot(), gone(&["b"]), "lost")?;

    // Lost: acknowledged, gone from the cluster, never acked.
    let h = History::default();
    enqueue(&h, "c");
    deliver(&h, "c", 1, 10_000);
    expect("vanished", h.snapshot(), gone(&["c"]), "lost")?;

    // Unfinished: still ready at the end.
    let h = History::default();
    enqueue(&h, "d");
    deliver(&h, "d", 1, 10_000);
    let finals: FinalStates = [("d".to_string(), Some("ready".to_string()))].into();
    expect("unfinished", h.snapshot(), finals, "unfinished")?;

    // Two jobs for one idempotency key.
    let h = History::default();
    enqueue(&h, "e");
    h.record(Op::EnqueueOk {
        key: "k-e".into(),
        job: "e2".into(),
    });
    expect("duplicate", h.snapshot(), gone(&["e", "e2"]), "duplicate")?;

    // The same attempt handed out twice.
    let h = History::default();
    enqueue(&h, "f");
    deliver(&h, "f", 1, 10_000);
    deliver(&h, "f", 1, 10_000);
    expect("double lease", h.snapshot(), gone(&["f"]), "double lease")?;

    // A second lease granted while the first was live (cluster clock).
    let h = History::default();
    enqueue(&h, "g");
    deliver(&h, "g", 1, 10_000);
    deliver(&h, "g", 2, 10_500);
    settle(&h, "g", 2, Settle::Ack);
    expect("overlap", h.snapshot(), gone(&["g"]), "overlapping leases")?;

    // An ack of an attempt whose lease had moved on, accepted.
    let h = History::default();
    enqueue(&h, "i");
    deliver(&h, "i", 1, 10_000);
    deliver(&h, "i", 2, 12_000);
    settle(&h, "i", 1, Settle::Ack);
    expect("stale ack", h.snapshot(), gone(&["i"]), "stale")?;

    // Acked, then delivered again.
    let h = History::default();
    enqueue(&h, "j");
    deliver(&h, "j", 1, 10_000);
    settle(&h, "j", 1, Settle::Ack);
    deliver(&h, "j", 2, 20_000);
    expect("came back", h.snapshot(), gone(&["j"]), "came back")?;

    // A nack whose answer was lost may have released the lease early.
    let h = History::default();
    enqueue(&h, "n");
    deliver(&h, "n", 1, 10_000);
    h.record(Op::SettleInvoke {
        job: "n".into(),
        attempt: 1,
        kind: Settle::Retry,
    });
    deliver(&h, "n", 2, 10_500);
    settle(&h, "n", 2, Settle::Ack);
    expect("lost nack answer", h.snapshot(), gone(&["n"]), "")?;

    // A stream's release hands the job back early: no overlap.
    let h = History::default();
    enqueue(&h, "r");
    deliver(&h, "r", 1, 10_000);
    h.record(Op::SettleInvoke {
        job: "r".into(),
        attempt: 1,
        kind: Settle::Release,
    });
    deliver(&h, "r", 2, 10_500);
    settle(&h, "r", 2, Settle::Ack);
    expect("released", h.snapshot(), gone(&["r"]), "")?;

    // Only released, then gone: lost (a release is not an ack).
    let h = History::default();
    enqueue(&h, "s");
    deliver(&h, "s", 1, 10_000);
    h.record(Op::SettleInvoke {
        job: "s".into(),
        attempt: 1,
        kind: Settle::Release,
    });
    expect("released then gone", h.snapshot(), gone(&["s"]), "lost")?;

    // A delivery nobody enqueued.
    let h = History::default();
    deliver(&h, "k", 1, 10_000);
    expect("phantom", h.snapshot(), gone(&[]), "phantom")?;
    Ok(())
}
