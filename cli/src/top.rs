//! `raftq top`: a live view of the queues (depths, rates) and the shards
//! (leader, term, each member's lag), refreshed every interval.
//!
//! Keys: `s` sorts by the next column, `/` filters queues by name
//! (Enter keeps it, Esc clears it), ↑/↓ select a queue, `p` pauses or
//! resumes it, `q` quits. `--batch` prints frames as text instead, for
//! scripts and logs (like `top -b`).
//!
//! The view is a pure function of [`View`], and keys change it through
//! [`View::on_key`]; only [`run`] touches the network and the terminal.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftq_client::{proto as pb, Client};
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::Conn;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// How often to refresh.
    #[arg(long, default_value = "1s", value_parser = crate::bench::parse_duration)]
    interval: Duration,
    /// Print frames as plain text instead of drawing on the terminal.
    #[arg(long)]
    batch: bool,
    /// With --batch: stop after this many frames (0 = never).
    #[arg(long, default_value_t = 0, requires = "batch")]
    iterations: u32,
    /// With --batch: the frame's width in columns.
    #[arg(long, default_value_t = 120, requires = "batch")]
    width: u16,
}

/// What one refresh read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub queues: Vec<pb::QueueStats>,
    /// Each node's status (peer port), or why it could not be read.
    pub cluster: Result<Vec<pb::ClusterStatus>, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Name,
    Ready,
    Dead,
    Rate,
}

impl Sort {
    fn next(self) -> Sort {
        match self {
            Sort::Name => Sort::Ready,
            Sort::Ready => Sort::Dead,
            Sort::Dead => Sort::Rate,
            Sort::Rate => Sort::Name,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::Ready => "ready",
            Sort::Dead => "dead",
            Sort::Rate => "enqueue rate",
        }
    }
}

/// What a key asks [`run`] to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Quit,
    /// Pause (true) or resume (false) this queue.
    Pause(String, bool),
}

/// One queue's row.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub stats: pb::QueueStats,
    /// Per second since the previous refresh: enqueued, acked, nacked, dead.
    pub rates: [f64; 4],
}

pub struct View {
    previous: Option<Snapshot>,
    current: Option<Snapshot>,
    pub sort: Sort,
    pub filter: String,
    pub editing_filter: bool,
    pub selected: usize,
    pub message: String,
}

impl Default for View {
    fn default() -> Self {
        View {
            previous: None,
            current: None,
            sort: Sort::Ready,
            filter: String::new(),
            editing_filter: false,
            selected: 0,
            message: String::new(),
        }
    }
}

impl View {
    pub fn update(&mut self, snapshot: Snapshot) {
        self.previous = self.current.replace(snapshot);
    }

    /// The queues shown, filtered and sorted, with their rates.
    pub fn rows(&self) -> Vec<QueueRow> {
        let Some(current) = &self.current else {
            return Vec::new();
        };
        let before: BTreeMap<&str, &pb::QueueStats> = self
            .previous
            .iter()
            .flat_map(|p| p.queues.iter().map(|q| (q.queue.as_str(), q)))
            .collect();
        let seconds = self
            .previous
            .as_ref()
            .map(|p| current.at.duration_since(p.at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let mut rows: Vec<QueueRow> = current
            .queues
            .iter()
            .filter(|q| q.queue.contains(self.filter.as_str()))
            .map(|q| {
                let rate = |now: u64, then: Option<u64>| match (then, seconds) {
                    (Some(then), Some(s)) => now.saturating_sub(then) as f64 / s,
                    _ => 0.0,
                };
                let then = before.get(q.queue.as_str());
                QueueRow {
                    rates: [
                        rate(q.enqueued_total, then.map(|t| t.enqueued_total)),
                        rate(q.acked_total, then.map(|t| t.acked_total)),
                        rate(q.nacked_total, then.map(|t| t.nacked_total)),
                        rate(q.dead_total, then.map(|t| t.dead_total)),
                    ],
                    stats: q.clone(),
                }
            })
            .collect();
        match self.sort {
            Sort::Name => rows.sort_by(|a, b| a.stats.queue.cmp(&b.stats.queue)),
            Sort::Ready => rows.sort_by_key(|r| std::cmp::Reverse(r.stats.ready)),
            Sort::Dead => rows.sort_by_key(|r| std::cmp::Reverse(r.stats.dead)),
            Sort::Rate => rows.sort_by(|a, b| b.rates[0].total_cmp(&a.rates[0])),
        }
        rows
    }

    pub fn on_key(&mut self, key: KeyCode) -> Action {
        if self.editing_filter {
            match key {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            return Action::Nothing;
        }
        let rows = self.rows();
        match key {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(rows.len().saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Char('p') => {
                if let Some(row) = rows.get(self.selected) {
                    return Action::Pause(row.stats.queue.clone(), !row.stats.paused);
                }
            }
            _ => {}
        }
        Action::Nothing
    }

    pub fn draw(&self, frame: &mut Frame) {
        self.render(frame.area(), frame.buffer_mut());
    }

    pub fn render(&self, area: Rect, buf: &mut Buffer) {
        use ratatui::widgets::{StatefulWidget, Widget};
        let shards = self.shard_rows();
        let [header, queues, cluster, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(5),
            Constraint::Length(shards.len() as u16 + 3),
            Constraint::Length(1),
        ])
        .areas(area);
        let rows = self.rows();
        let total_ready: u64 = rows.iter().map(|r| r.stats.ready).sum();
        Paragraph::new(format!(
            "raftq top — {} queues, {total_ready} ready — sorted by {}{}",
            rows.len(),
            self.sort.label(),
            if self.filter.is_empty() {
                String::new()
            } else {
                format!(" — filter \"{}\"", self.filter)
            }
        ))
        .style(Style::new().add_modifier(Modifier::BOLD))
        .render(header, buf);
        let table_rows = rows.iter().map(|r| {
            let s = &r.stats;
            Row::new(vec![
                s.queue.clone(),
                s.ready.to_string(),
                s.scheduled.to_string(),
                s.leased.to_string(),
                s.dead.to_string(),
                rate(r.rates[0]),
                rate(r.rates[1]),
                rate(r.rates[2]),
                rate(r.rates[3]),
                if s.paused { "paused" } else { "" }.to_string(),
            ])
        });
        let table = Table::new(
            table_rows,
            [
                Constraint::Min(16),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(7),
            ],
        )
        .header(
            Row::new(vec![
                "QUEUE",
                "READY",
                "SCHEDULED",
                "LEASED",
                "DEAD",
                "ENQ/S",
                "ACK/S",
                "NACK/S",
                "DEAD/S",
                "",
            ])
            .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title("Queues"));
        let mut state = TableState::default().with_selected(Some(self.selected));
        StatefulWidget::render(table, queues, buf, &mut state);
        let cluster_block = Block::bordered().title("Shards");
        match &shards[..] {
            [] => Paragraph::new("no shard status yet")
                .block(cluster_block)
                .render(cluster, buf),
            lines => Paragraph::new(
                lines
                    .iter()
                    .map(|l| Line::from(l.as_str()))
                    .collect::<Vec<_>>(),
            )
            .block(cluster_block)
            .render(cluster, buf),
        }
        let help = if self.editing_filter {
            format!("filter: {}▏ (Enter keeps, Esc clears)", self.filter)
        } else if !self.message.is_empty() {
            self.message.clone()
        } else {
            "s sort · / filter · ↑↓ select · p pause/resume · q quit".to_string()
        };
        Paragraph::new(help).render(footer, buf);
    }

    /// One line per shard: leader, term, and each member's lag behind the
    /// leader's log.
    fn shard_rows(&self) -> Vec<String> {
        let Some(current) = &self.current else {
            return Vec::new();
        };
        let nodes = match &current.cluster {
            Err(why) => return vec![format!("cluster status unavailable: {why}")],
            Ok(nodes) => nodes,
        };
        let mut shards: BTreeMap<u32, Vec<(u64, &pb::ShardStatus)>> = BTreeMap::new();
        for node in nodes {
            for shard in &node.shards {
                shards
                    .entry(shard.shard)
                    .or_default()
                    .push((node.node_id, shard));
            }
        }
        shards
            .into_iter()
            .map(|(id, views)| {
                let leader = views
                    .iter()
                    .find(|(_, s)| s.role == "leader")
                    .map(|(_, s)| *s);
                let any = leader.unwrap_or(views[0].1);
                let head = match leader {
                    Some(l) => format!("shard {id}: leader node {} term {}", l.leader_id, l.term),
                    None if any.has_leader => {
                        format!(
                            "shard {id}: leader node {} term {}",
                            any.leader_id, any.term
                        )
                    }
                    None => format!("shard {id}: NO LEADER term {}", any.term),
                };
                let members: Vec<String> = any
                    .members
                    .iter()
                    .map(|m| match leader {
                        Some(l) => format!(
                            "node {} lag {}",
                            m.node_id,
                            l.last_log_index.saturating_sub(m.matched_index)
                        ),
                        None => format!("node {}", m.node_id),
                    })
                    .collect();
                format!("{head} · {}", members.join(", "))
            })
            .collect()
    }
}

fn rate(per_second: f64) -> String {
    if per_second >= 100.0 {
        format!("{per_second:.0}")
    } else {
        format!("{per_second:.1}")
    }
}

/// Reads the queues and every node's shard status.
async fn collect(client: &Client, conn: &Conn) -> anyhow::Result<Snapshot> {
    let queues = client
        .admin()
        .stats(pb::StatsRequest::default())
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner()
        .queues;
    let cluster = cluster(conn).await.map_err(|e| format!("{e:#}"));
    Ok(Snapshot {
        at: Instant::now(),
        queues,
        cluster,
    })
}

async fn cluster(conn: &Conn) -> anyhow::Result<Vec<pb::ClusterStatus>> {
    let first = conn
        .connect(&conn.peer_addr)
        .await?
        .cluster()
        .status(pb::ClusterStatusRequest::default())
        .await
        .map_err(|s| anyhow::anyhow!("{} ({})", s.message(), conn.peer_addr))?
        .into_inner();
    let mut others: Vec<(u64, String)> = first
        .shards
        .iter()
        .flat_map(|s| s.members.iter())
        .filter(|m| m.node_id != first.node_id)
        .map(|m| (m.node_id, m.addr.clone()))
        .collect();
    others.sort();
    others.dedup();
    let mut all = vec![first];
    for (_, addr) in others {
        let answer = async {
            conn.connect(&addr)
                .await?
                .cluster()
                .status(pb::ClusterStatusRequest::default())
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))
        };
        // A node that does not answer is left out; its shards still show
        // from the others' views.
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), answer).await {
            all.push(status.into_inner());
        }
    }
    Ok(all)
}

/// The frame as text, `width` columns wide.
pub fn frame_text(view: &View, width: u16) -> String {
    let height = (view.rows().len() + view.shard_rows().len()) as u16 + 12;
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    view.render(area, &mut buf);
    let mut out = String::new();
    for y in 0..area.height {
        let line: String = (0..area.width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub async fn run(client: Client, conn: Conn, args: TopArgs) -> anyhow::Result<()> {
    let mut view = View::default();
    if args.batch {
        let mut frames = 0;
        loop {
            view.update(collect(&client, &conn).await?);
            print!("{}", frame_text(&view, args.width));
            frames += 1;
            if args.iterations > 0 && frames >= args.iterations {
                return Ok(());
            }
            tokio::time::sleep(args.interval).await;
        }
    }
    // Keys come from a thread of their own; the loop waits on them and the
    // refresh timer together.
    let (keys_tx, mut keys) = tokio::sync::mpsc::unbounded_channel::<KeyEvent>();
    std::thread::spawn(move || loop {
        match event::read() {
            Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => {
                if keys_tx.send(key).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    });
    let mut terminal = ratatui::try_init()?;
    let outcome = async {
        let mut tick = tokio::time::interval(args.interval);
        loop {
            tokio::select! {
                _ = tick.tick() => match collect(&client, &conn).await {
                    Ok(snapshot) => {
                        view.update(snapshot);
                        view.message.clear();
                    }
                    Err(e) => view.message = format!("refresh failed: {e:#}"),
                },
                Some(key) = keys.recv() => match view.on_key(key.code) {
                    Action::Quit => return Ok(()),
                    Action::Pause(queue, pause) => {
                        let request = pb::QueueRef { queue: queue.clone() };
                        let mut admin = client.admin();
                        let done = if pause {
                            admin.pause_queue(request).await
                        } else {
                            admin.resume_queue(request).await
                        };
                        view.message = match done {
                            Ok(_) => format!("{} {queue}", if pause { "paused" } else { "resumed" }),
                            Err(s) => format!("{queue}: {}", s.message()),
                        };
                        tick.reset_immediately();
                    }
                    Action::Nothing => {}
                },
            }
            terminal.draw(|frame| view.draw(frame))?;
        }
    }
    .await;
    ratatui::restore();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(queue: &str, ready: u64, dead: u64, enqueued: u64) -> pb::QueueStats {
        pb::QueueStats {
            queue: queue.into(),
            ready,
            dead,
            enqueued_total: enqueued,
            ..Default::default()
        }
    }

    fn snapshot(at: Instant, queues: Vec<pb::QueueStats>) -> Snapshot {
        let member = |id| pb::Member {
            node_id: id,
            addr: format!("n{id}"),
            voter: true,
            matched_index: 90 + id,
        };
        let shard = pb::ShardStatus {
            shard: 0,
            leader_id: 1,
            has_leader: true,
            term: 4,
            last_log_index: 100,
            members: vec![member(1), member(2)],
            role: "leader".into(),
            ..Default::default()
        };
        Snapshot {
            at,
            queues,
            cluster: Ok(vec![pb::ClusterStatus {
                node_id: 1,
                shards: vec![shard],
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn rates_sorting_filtering_and_keys() {
        let t0 = Instant::now();
        let mut view = View::default();
        view.update(snapshot(
            t0,
            vec![stats("emails", 5, 0, 100), stats("reports", 50, 2, 10)],
        ));
        view.update(snapshot(
            t0 + Duration::from_secs(2),
            vec![stats("emails", 7, 1, 300), stats("reports", 40, 2, 10)],
        ));
        let rows = view.rows();
        assert_eq!(rows[0].stats.queue, "reports", "sorted by ready");
        assert_eq!(rows[1].rates[0], 100.0, "200 enqueues in 2 s");
        assert_eq!(view.on_key(KeyCode::Char('s')), Action::Nothing);
        assert_eq!(view.sort, Sort::Dead);
        view.on_key(KeyCode::Char('s'));
        assert_eq!(view.rows()[0].stats.queue, "emails", "sorted by rate");
        for key in [
            KeyCode::Char('/'),
            KeyCode::Char('r'),
            KeyCode::Char('e'),
            KeyCode::Enter,
        ] {
            view.on_key(key);
        }
        assert_eq!(view.rows().len(), 1);
        assert_eq!(
            view.on_key(KeyCode::Char('p')),
            Action::Pause("reports".into(), true)
        );
        view.on_key(KeyCode::Char('/'));
        view.on_key(KeyCode::Esc);
        assert_eq!(view.rows().len(), 2);
        view.on_key(KeyCode::Down);
        assert_eq!(
            view.on_key(KeyCode::Char('p')),
            Action::Pause("reports".into(), true)
        );
        assert_eq!(view.on_key(KeyCode::Char('q')), Action::Quit);

        let text = frame_text(&view, 110);
        assert!(text.contains("emails"), "{text}");
        assert!(text.contains(" 100 "), "{text}");
        assert!(
            text.contains("shard 0: leader node 1 term 4 · node 1 lag 9, node 2 lag 8"),
            "{text}"
        );
    }
}
