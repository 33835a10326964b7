//! One move, step by step: the incoming node joins as a learner, catches
//! up (from the log or a snapshot), leadership leaves the outgoing node if
//! it leads, one membership change swaps the two (openraft goes through
//! joint consensus), and the outgoing node deletes its copy. A move whose
//! step makes no progress for `stall_after_ms` is rolled back: the learner
//! is removed and the shard keeps the voters it had.
//!
//! [`advance`] is pure: the metadata leader calls it with what it observes
//! of the shard, performs the returned [`Action`] (each is idempotent, so
//! doing one twice after a restart is harmless) and stores the progress.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::{NodeId, Shard};
use crate::plan::Move;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    AddLearner,
    CatchUp,
    MoveLeader,
    Swap,
    DropOldCopy,
    Done,
    RollingBack,
    RolledBack,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub mv: Move,
    pub phase: Phase,
    /// When the phase began (the metadata group's clock, milliseconds).
    pub since_ms: u64,
    /// Why it was rolled back.
    pub reason: Option<String>,
}

impl Progress {
    pub fn start(mv: Move, now_ms: u64) -> Progress {
        Progress {
            mv,
            phase: Phase::AddLearner,
            since_ms: now_ms,
            reason: None,
        }
    }

    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::RolledBack)
    }
}

/// What is known of the shard now.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub shard: &'a Shard,
    /// Entries the incoming learner trails the leader's log by, when known.
    pub learner_lag: Option<u64>,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Wait,
    AddLearner(NodeId),
    TransferLeader(NodeId),
    SetVoters(BTreeSet<NodeId>),
    /// The node is no member any more: it deletes its copy of the shard.
    DeleteCopy(NodeId),
    RemoveLearner(NodeId),
}

#[derive(Clone, Copy, Debug)]
pub struct StepConfig {
    /// A learner this close to the leader's log has caught up.
    pub caught_up_within: u64,
    /// A phase that lasts longer has stalled.
    pub stall_after_ms: u64,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            caught_up_within: 1_000,
            stall_after_ms: 10 * 60 * 1_000,
        }
    }
}

/// The next progress and the action to perform for it.
pub fn advance(p: &Progress, seen: &Observation, config: &StepConfig) -> (Progress, Action) {
    let mv = &p.mv;
    let shard = seen.shard;
    let stalled = seen.now_ms.saturating_sub(p.since_ms) > config.stall_after_ms;
    let to = |phase: Phase| Progress {
        mv: mv.clone(),
        phase,
        since_ms: if phase == p.phase {
            p.since_ms
        } else {
            seen.now_ms
        },
        reason: p.reason.clone(),
    };
    let roll_back = |why: &str| {
        let mut next = to(Phase::RollingBack);
        next.reason = Some(format!("{why} for more than {} ms", config.stall_after_ms));
        (next, Action::Wait)
    };
    let swapped = || {
        let mut voters = shard.voters.clone();
        if let Some(r) = mv.remove {
            voters.remove(&r);
        }
        voters.extend(mv.add);
        voters
    };
    match p.phase {
        Phase::AddLearner => match mv.add {
            None => (to(Phase::MoveLeader), Action::Wait),
            Some(a) if shard.learners.contains(&a) || shard.voters.contains(&a) => {
                (to(Phase::CatchUp), Action::Wait)
            }
            Some(_) if stalled => roll_back("the learner was not added"),
            Some(a) => (to(Phase::AddLearner), Action::AddLearner(a)),
        },
        Phase::CatchUp => match seen.learner_lag {
            Some(lag) if lag <= config.caught_up_within => (to(Phase::MoveLeader), Action::Wait),
            _ if stalled => roll_back("the learner did not catch up"),
            _ => (to(Phase::CatchUp), Action::Wait),
        },
        Phase::MoveLeader => match (mv.remove, shard.leader) {
            (Some(r), Some(l)) if r == l => {
                let heir = shard.voters.iter().copied().find(|&v| v != r);
                match heir {
                    _ if stalled => roll_back("leadership did not move"),
                    Some(h) => (to(Phase::MoveLeader), Action::TransferLeader(h)),
                    None => roll_back("no other voter can lead"),
                }
            }
            (_, None) if stalled => roll_back("the shard had no leader"),
            (_, None) => (to(Phase::MoveLeader), Action::Wait),
            _ => (to(Phase::Swap), Action::Wait),
        },
        Phase::Swap => {
            let wanted = swapped();
            if shard.voters == wanted
                || (mv.add.is_none_or(|a| shard.voters.contains(&a))
                    && mv.remove.is_none_or(|r| !shard.voters.contains(&r)))
            {
                (to(Phase::DropOldCopy), Action::Wait)
            } else if stalled {
                roll_back("the membership change did not happen")
            } else {
                (to(Phase::Swap), Action::SetVoters(wanted))
            }
        }
        Phase::DropOldCopy => match mv.remove {
            Some(r) => (to(Phase::Done), Action::DeleteCopy(r)),
            None => (to(Phase::Done), Action::Wait),
        },
        Phase::RollingBack => match mv.add {
            // The swap happened after all: finish instead.
            Some(a) if shard.voters.contains(&a) => (to(Phase::DropOldCopy), Action::Wait),
            Some(a) if shard.learners.contains(&a) => {
                (to(Phase::RollingBack), Action::RemoveLearner(a))
            }
            _ => (to(Phase::RolledBack), Action::Wait),
        },
        Phase::Done | Phase::RolledBack => (to(p.phase), Action::Wait),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(voters: &[NodeId], learners: &[NodeId], leader: NodeId) -> Shard {
        Shard {
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            leader: Some(leader),
            epoch: 1,
        }
    }

    fn swap(add: NodeId, remove: NodeId) -> Move {
        Move {
            shard: 0,
            add: Some(add),
            remove: Some(remove),
        }
    }

    fn step(p: &Progress, s: &Shard, lag: Option<u64>, now_ms: u64) -> (Progress, Action) {
        let seen = Observation {
            shard: s,
            learner_lag: lag,
            now_ms,
        };
        advance(p, &seen, &StepConfig::default())
    }

    #[test]
    fn a_move_of_the_leaders_replica_goes_through_every_step() {
        let mut p = Progress::start(swap(4, 1), 0);
        let s = shard(&[1, 2, 3], &[], 1);
        let (next, action) = step(&p, &s, None, 10);
        assert_eq!(action, Action::AddLearner(4));
        p = next;
        let s = shard(&[1, 2, 3], &[4], 1);
        let (next, _) = step(&p, &s, None, 20);
        assert_eq!(next.phase, Phase::CatchUp);
        p = next;
        // Behind: keep waiting; caught up: move on.
        assert_eq!(step(&p, &s, Some(50_000), 30).0.phase, Phase::CatchUp);
        p = step(&p, &s, Some(10), 40).0;
        assert_eq!(p.phase, Phase::MoveLeader);
        let (next, action) = step(&p, &s, Some(0), 50);
        assert_eq!(action, Action::TransferLeader(2));
        assert_eq!(next.phase, Phase::MoveLeader);
        let s = shard(&[1, 2, 3], &[4], 2);
        p = step(&next, &s, Some(0), 60).0;
        assert_eq!(p.phase, Phase::Swap);
        let (next, action) = step(&p, &s, Some(0), 70);
        assert_eq!(action, Action::SetVoters([2, 3, 4].into()));
        let s = shard(&[2, 3, 4], &[], 2);
        p = step(&next, &s, None, 80).0;
        assert_eq!(p.phase, Phase::DropOldCopy);
        let (done, action) = step(&p, &s, None, 90);
        assert_eq!(action, Action::DeleteCopy(1));
        assert!(done.finished());
    }

    #[test]
    fn a_learner_that_never_catches_up_is_rolled_back() {
        let config = StepConfig::default();
        let p = Progress {
            phase: Phase::CatchUp,
            ..Progress::start(swap(4, 1), 0)
        };
        let s = shard(&[1, 2, 3], &[4], 1);
        let late = config.stall_after_ms + 1;
        let (p, _) = step(&p, &s, Some(1_000_000), late);
        assert_eq!(p.phase, Phase::RollingBack);
        assert!(p
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("did not catch up")));
        let (p, action) = step(&p, &s, None, late + 1);
        assert_eq!(action, Action::RemoveLearner(4));
        let s = shard(&[1, 2, 3], &[], 1);
        let (p, _) = step(&p, &s, None, late + 2);
        assert_eq!(p.phase, Phase::RolledBack);
        assert!(p.finished());
    }

    #[test]
    fn a_swap_that_happened_before_a_restart_is_not_undone() {
        let p = Progress {
            phase: Phase::RollingBack,
            ..Progress::start(swap(4, 1), 0)
        };
        let s = shard(&[2, 3, 4], &[], 2);
        assert_eq!(step(&p, &s, None, 1).0.phase, Phase::DropOldCopy);
    }

    #[test]
    fn a_removal_alone_skips_the_learner_steps() {
        let mv = Move {
            shard: 0,
            add: None,
            remove: Some(5),
        };
        let s = shard(&[1, 2, 3, 4, 5], &[], 1);
        let p = step(&Progress::start(mv, 0), &s, None, 1).0;
        assert_eq!(p.phase, Phase::MoveLeader);
        let p = step(&p, &s, None, 2).0;
        assert_eq!(p.phase, Phase::Swap);
        let (_, action) = step(&p, &s, None, 3);
        assert_eq!(action, Action::SetVoters([1, 2, 3, 4].into()));
    }
}
