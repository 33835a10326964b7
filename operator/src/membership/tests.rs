use super::*;

/// A node's status answer for `shards` shards, each with `voters`/`learners`
/// and `leader` (0 = none).
fn node(id: u64, shards: u32, leader: u64, voters: &[u64], learners: &[u64]) -> pb::ClusterStatus {
    let members = voters
        .iter()
        .map(|v| pb::Member {
            node_id: *v,
            addr: format!("n{v}"),
            voter: true,
            matched_index: 0,
        })
        .chain(learners.iter().map(|l| pb::Member {
            node_id: *l,
            addr: format!("n{l}"),
            voter: false,
            matched_index: 0,
        }))
        .collect::<Vec<_>>();
    pb::ClusterStatus {
        client_addr: String::new(),
        node_id: id,
        addr: format!("n{id}"),
        shards: (0..shards)
            .map(|shard| pb::ShardStatus {
                shard,
                leader_id: leader,
                has_leader: leader != 0,
                term: 3,
                applied_index: 10,
                members: members.clone(),
                ..pb::ShardStatus::default()
            })
            .collect(),
        ..pb::ClusterStatus::default()
    }
}

fn blank(id: u64) -> pb::ClusterStatus {
    node(id, 2, 0, &[], &[])
}

fn observed(nodes: Vec<pb::ClusterStatus>) -> Observed {
    Observed {
        nodes: nodes.into_iter().map(|n| (n.node_id, n)).collect(),
        placement: None,
        zones: BTreeMap::new(),
    }
}

/// A placed queue of 2 shards whose voters are `on` (shard 0 led by the
/// first, shard 1 by the second), as every node in `answering` reports it,
/// with the coordinator's `declared` nodes (id, draining) and `balanced`.
fn placed(
    answering: &[u64],
    on: [&[u64]; 2],
    declared: &[(u64, bool)],
    balanced: bool,
) -> Observed {
    let shard = |id: u32, voters: &[u64]| pb::ShardStatus {
        shard: id,
        leader_id: voters[id as usize % voters.len()],
        has_leader: true,
        term: 2,
        applied_index: 10,
        members: voters
            .iter()
            .map(|v| pb::Member {
                node_id: *v,
                addr: format!("n{v}"),
                voter: true,
                matched_index: 0,
            })
            .collect(),
        ..pb::ShardStatus::default()
    };
    let nodes = answering
        .iter()
        .map(|id| {
            let shards = (0..2u32)
                .filter(|s| on[*s as usize].contains(id))
                .map(|s| shard(s, on[s as usize]))
                .collect();
            (
                *id,
                pb::ClusterStatus {
                    node_id: *id,
                    addr: format!("n{id}"),
                    shards,
                    ..Default::default()
                },
            )
        })
        .collect();
    Observed {
        nodes,
        zones: BTreeMap::new(),
        placement: Some(pb::PlacementStatus {
            coordinator: 1,
            replication_factor: 3,
            declared: declared
                .iter()
                .map(|(id, draining)| pb::NodeSpec {
                    node_id: *id,
                    addr: format!("n{id}"),
                    zone: String::new(),
                    draining: *draining,
                })
                .collect(),
            nodes: Vec::new(),
            moves: Vec::new(),
            balanced,
        }),
    }
}

fn declare(nodes: &[(u64, bool)]) -> Result<Step, Hold> {
    Ok(Step::DeclareNodes {
        nodes: nodes.iter().copied().collect(),
        zones: BTreeMap::new(),
    })
}

#[test]
fn a_placed_queue_declares_its_nodes_then_settles() {
    let layout = Layout::Placed {
        shards: 2,
        initial: 2,
    };
    let on: [&[u64]; 2] = [&[1, 2, 3], &[2, 3, 4]];
    let fresh = placed(&[1, 2, 3, 4], on, &[], true);
    let p = plan_for(layout, 4, true, &fresh);
    assert_eq!(
        p.next,
        declare(&[(1, false), (2, false), (3, false), (4, false)])
    );
    let done = placed(
        &[1, 2, 3, 4],
        on,
        &[(1, false), (2, false), (3, false), (4, false)],
        true,
    );
    assert_eq!(plan_for(layout, 4, true, &done).next, Err(Hold::Settled));
    let moving = placed(
        &[1, 2, 3, 4],
        on,
        &[(1, false), (2, false), (3, false), (4, false)],
        false,
    );
    assert!(
        matches!(plan_for(layout, 4, true, &moving).next, Err(Hold::Waiting(w)) if w.contains("moving replicas"))
    );
}

#[test]
fn a_placed_queue_grows_once_its_new_pods_answer() {
    let layout = Layout::Placed {
        shards: 2,
        initial: 2,
    };
    let on: [&[u64]; 2] = [&[1, 2, 3], &[1, 2, 3]];
    let three = [(1, false), (2, false), (3, false)];
    let before = placed(&[1, 2, 3], on, &three, true);
    let p = plan_for(layout, 5, true, &before);
    assert_eq!(p.stateful_set_replicas, 5, "the new pods are created first");
    assert!(
        matches!(p.next, Err(Hold::Waiting(w)) if w.contains("node 4 (pod 3) does not answer"))
    );
    let up = placed(&[1, 2, 3, 4, 5], on, &three, true);
    let p = plan_for(layout, 5, true, &up);
    assert_eq!(
        p.next,
        declare(&[(1, false), (2, false), (3, false), (4, false), (5, false)])
    );
}

#[test]
fn a_placed_queue_drains_the_highest_pods_before_it_shrinks() {
    let layout = Layout::Placed {
        shards: 2,
        initial: 2,
    };
    let five: Vec<(u64, bool)> = (1..=5).map(|id| (id, false)).collect();
    let spread: [&[u64]; 2] = [&[1, 4, 5], &[2, 3, 5]];
    let p = plan_for(
        layout,
        3,
        true,
        &placed(&[1, 2, 3, 4, 5], spread, &five, true),
    );
    assert_eq!(
        p.stateful_set_replicas, 5,
        "pods 4 and 5 hold replicas: they stay"
    );
    assert_eq!(
        p.next,
        declare(&[(1, false), (2, false), (3, false), (4, true), (5, true)])
    );
    // Drained: nodes 4 and 5 hold nothing; they leave the declaration and
    // the StatefulSet.
    let drained = [(1, false), (2, false), (3, false), (4, true), (5, true)];
    let home: [&[u64]; 2] = [&[1, 2, 3], &[1, 2, 3]];
    let p = plan_for(
        layout,
        3,
        true,
        &placed(&[1, 2, 3, 4, 5], home, &drained, true),
    );
    assert_eq!(p.stateful_set_replicas, 3);
    assert_eq!(p.next, declare(&[(1, false), (2, false), (3, false)]));
}

fn voters(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

#[test]
fn nothing_answers_so_wait_at_the_spec_size() {
    let p = plan(3, false, &Observed::default());
    assert!(matches!(p.next, Err(Hold::Waiting(_))));
    assert_eq!(p.stateful_set_replicas, 3);
}

#[test]
fn fresh_cluster_bootstraps_on_pod_zero_only() {
    let p = plan(3, false, &observed(vec![blank(1), blank(2), blank(3)]));
    assert_eq!(p.next, Ok(Step::Bootstrap));
    // Pod 0 not up yet: wait, never bootstrap elsewhere.
    let p = plan(3, false, &observed(vec![blank(2), blank(3)]));
    assert_eq!(
        p.next,
        Err(Hold::Waiting("waiting for pod 0 to start".into()))
    );
}

#[test]
fn bootstrapped_before_but_empty_now_is_refused_not_rebootstrapped() {
    let p = plan(3, true, &observed(vec![blank(1), blank(2), blank(3)]));
    match p.next {
        Err(Hold::Refused(why)) => assert!(why.contains("data was lost"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn growth_adds_learners_in_order_then_promotes() {
    let one = node(1, 2, 1, &[1], &[]);
    let p = plan(3, true, &observed(vec![one.clone(), blank(2), blank(3)]));
    assert_eq!(p.next, Ok(Step::AddLearner { id: 2 }));
    assert_eq!(p.stateful_set_replicas, 3);

    // Pod 1 (node 2) is a learner; pod 2 not started: wait for it.
    let with_learner = node(1, 2, 1, &[1], &[2]);
    let p = plan(3, true, &observed(vec![with_learner.clone()]));
    assert_eq!(
        p.next,
        Err(Hold::Waiting("waiting for pod 2 to start".into()))
    );

    let both = node(1, 2, 1, &[1], &[2, 3]);
    let p = plan(3, true, &observed(vec![both, blank(2), blank(3)]));
    assert_eq!(
        p.next,
        Ok(Step::SetVoters {
            voters: voters(&[1, 2, 3])
        })
    );

    let done = node(1, 2, 1, &[1, 2, 3], &[]);
    let p = plan(3, true, &observed(vec![done]));
    assert_eq!(p.next, Err(Hold::Settled));
}

#[test]
fn shrink_keeps_the_statefulset_until_the_nodes_left() {
    let five = |id| node(id, 2, 1, &[1, 2, 3, 4, 5], &[]);
    let p = plan(3, true, &observed((1..=5).map(five).collect()));
    assert_eq!(
        p.next,
        Ok(Step::SetVoters {
            voters: voters(&[1, 2, 3])
        })
    );
    assert_eq!(p.stateful_set_replicas, 5, "pods 3 and 4 still vote");

    let three = |id| node(id, 2, 1, &[1, 2, 3], &[]);
    let p = plan(3, true, &observed((1..=3).map(three).collect()));
    assert_eq!(p.next, Err(Hold::Settled));
    assert_eq!(p.stateful_set_replicas, 3);
}

#[test]
fn a_change_that_would_lose_quorum_is_refused() {
    // Shrink 5 -> 3 while nodes 2 and 3 are down: the new voters {1,2,3}
    // would have only one live member.
    let five = |id| node(id, 1, 1, &[1, 2, 3, 4, 5], &[]);
    let p = plan(3, true, &observed(vec![five(1), five(4), five(5)]));
    match p.next {
        Err(Hold::Refused(why)) => assert!(why.contains("without a majority"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(p.stateful_set_replicas, 5);
}

#[test]
fn leaderless_shard_waits() {
    let mut n = node(1, 2, 1, &[1, 2, 3], &[]);
    n.shards[1].has_leader = false;
    n.shards[1].leader_id = 0;
    let p = plan(3, true, &observed(vec![n]));
    assert_eq!(
        p.next,
        Err(Hold::Waiting("shard 1 has no leader yet".into()))
    );
}

#[test]
fn the_leaders_view_wins_over_a_stale_follower() {
    // Node 2 still thinks the voters are {1}; the leader (1) knows {1,2,3}.
    let leader = node(1, 1, 1, &[1, 2, 3], &[]);
    let mut stale = node(2, 1, 1, &[1], &[2]);
    stale.shards[0].applied_index = 99;
    let p = plan(3, true, &observed(vec![stale, leader]));
    assert_eq!(p.next, Err(Hold::Settled));
}

#[test]
fn a_placed_queue_declares_its_pods_zones_and_again_when_they_change() {
    let layout = Layout::Placed {
        shards: 2,
        initial: 2,
    };
    let on: [&[u64]; 2] = [&[1, 2, 3], &[1, 2, 3]];
    let three = [(1, false), (2, false), (3, false)];
    let mut observed = placed(&[1, 2, 3], on, &three, true);
    // Node 3's pod is on a Node without a zone label.
    observed.zones = BTreeMap::from([(1, "a".to_string()), (2, "b".to_string())]);
    let p = plan_for(layout, 3, true, &observed);
    assert_eq!(
        p.next,
        Ok(Step::DeclareNodes {
            nodes: three.into_iter().collect(),
            zones: observed.zones.clone(),
        })
    );
    // Declared with those zones: settled.
    if let Some(placement) = observed.placement.as_mut() {
        for n in &mut placement.declared {
            n.zone = observed.zones.get(&n.node_id).cloned().unwrap_or_default();
        }
    }
    assert_eq!(
        plan_for(layout, 3, true, &observed).next,
        Err(Hold::Settled)
    );
    // A pod rescheduled into another zone is declared again.
    observed.zones.insert(2, "c".to_string());
    assert!(matches!(
        plan_for(layout, 3, true, &observed).next,
        Ok(Step::DeclareNodes { zones, .. }) if zones.get(&2).map(String::as_str) == Some("c")
    ));
}

#[test]
fn a_placed_queue_grows_its_shard_count_once_its_nodes_are_declared() {
    let on: [&[u64]; 2] = [&[1, 2, 3], &[1, 2, 3]];
    let three = [(1, false), (2, false), (3, false)];
    let grow = Layout::Placed {
        shards: 4,
        initial: 2,
    };
    let undeclared = placed(&[1, 2, 3], on, &[], true);
    assert_eq!(plan_for(grow, 3, true, &undeclared).next, declare(&three));
    let declared = placed(&[1, 2, 3], on, &three, true);
    assert_eq!(
        plan_for(grow, 3, true, &declared).next,
        Ok(Step::GrowShards { shard_count: 4 })
    );
    // Grown: the nodes' routing says 4 shards, and shards 2 and 3 answer.
    let mut grown = declared.clone();
    for node in grown.nodes.values_mut() {
        node.routing = Some(pb::QueueRouting {
            version: 1,
            shard_count: 4,
            pins: Default::default(),
        });
        let mut extra = node.shards.clone();
        for (i, s) in extra.iter_mut().enumerate() {
            s.shard = 2 + i as u32;
        }
        node.shards.extend(extra);
    }
    assert_eq!(plan_for(grow, 3, true, &grown).next, Err(Hold::Settled));
    // Asked for fewer than it has: refused, with the reason.
    let shrink = Layout::Placed {
        shards: 3,
        initial: 2,
    };
    assert!(matches!(
        plan_for(shrink, 3, true, &grown).next,
        Err(Hold::Refused(why)) if why.contains("only grows")
    ));
}
