use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::model::{Node, Shard};

fn fresh(nodes: u64, rf: usize, shards: u32) -> Cluster {
    Cluster {
        nodes: (1..=nodes).map(|n| (n, Node::new(n))).collect(),
        shards: (0..shards).map(|s| (s, Shard::default())).collect(),
        replication_factor: rf,
    }
}

/// The cluster as if the target had been reached.
fn reached(mut cluster: Cluster, target: &Target) -> Cluster {
    for (id, voters) in &target.voters {
        let shard = cluster.shards.entry(*id).or_default();
        shard.voters = voters.clone();
        shard.leader = target.leaders.get(id).copied();
    }
    cluster
}

fn spread(cluster: &Cluster, members: &BTreeSet<NodeId>) -> usize {
    members
        .iter()
        .map(|&m| cluster.zone_of(m))
        .collect::<BTreeSet<_>>()
        .len()
}

fn range(counts: impl IntoIterator<Item = usize>) -> usize {
    let counts: Vec<usize> = counts.into_iter().collect();
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
}

#[test]
fn six_nodes_rf_three_twelve_shards_hold_six_replicas_and_lead_two_each() {
    let c = fresh(6, 3, 12);
    let t = target(&c).expect("target");
    let placed = reached(c, &t);
    assert!(placed.replicas_per_node().values().all(|&n| n == 6));
    assert!(placed.leaders_per_node().values().all(|&n| n == 2));
}

#[test]
fn a_balanced_cluster_is_left_as_it_is() {
    let c = reached(fresh(5, 3, 16), &target(&fresh(5, 3, 16)).expect("target"));
    let t = target(&c).expect("target");
    assert_eq!(reached(c.clone(), &t), c);
}

#[test]
fn a_new_node_takes_its_share_and_no_more() {
    let before = fresh(5, 3, 20);
    let before = reached(before.clone(), &target(&before).expect("target"));
    let mut grown = before.clone();
    grown.nodes.insert(6, Node::new(6));
    let t = target(&grown).expect("target");
    let moved: usize = t
        .voters
        .iter()
        .map(|(id, v)| v.difference(&before.shards[id].voters).count())
        .sum();
    // 60 replicas over 6 nodes: node 6 takes 10, and nothing else moves.
    assert_eq!(moved, 10);
    assert_eq!(reached(grown, &t).replicas_per_node()[&6], 10);
}

#[test]
fn replicas_spread_over_zones() {
    let mut c = fresh(6, 3, 12);
    for (id, node) in c.nodes.iter_mut() {
        node.zone = Some(format!("zone-{}", id % 3));
    }
    let t = target(&c).expect("target");
    for voters in t.voters.values() {
        assert_eq!(spread(&c, voters), 3, "{voters:?}");
    }
}

#[test]
fn zones_declared_after_placement_spread_the_replicas_out() {
    // Placed evenly without zones (3 replicas each on 4 nodes); then the
    // nodes turn out to be in zones a, b, c, a.
    let placed = reached(fresh(4, 3, 4), &target(&fresh(4, 3, 4)).expect("target"));
    let mut zoned = placed.clone();
    for (id, node) in zoned.nodes.iter_mut() {
        node.zone = Some(["a", "b", "c"][(*id as usize - 1) % 3].to_string());
    }
    let t = target(&zoned).expect("target");
    for voters in t.voters.values() {
        assert_eq!(spread(&zoned, voters), 3, "{voters:?}");
    }
    // Nodes 2 and 3 are alone in their zones: every shard needs them.
    let counts = reached(zoned.clone(), &t).replicas_per_node();
    assert_eq!(counts, [(1, 2), (2, 4), (3, 4), (4, 2)].into());
    // Reached, the target stays.
    let again = reached(zoned, &t);
    assert_eq!(target(&again).expect("target").voters, t.voters);
}

#[test]
fn too_few_nodes_or_a_bad_factor_is_refused() {
    let mut c = fresh(3, 3, 4);
    c.nodes.get_mut(&3).expect("node 3").draining = true;
    assert_eq!(
        target(&c),
        Err(Refusal::TooFewNodes {
            active: 2,
            needed: 3
        })
    );
    assert_eq!(target(&fresh(4, 2, 1)), Err(Refusal::ReplicationFactor(2)));
}

fn arbitrary_cluster() -> impl Strategy<Value = Cluster> {
    (
        1u64..=12,
        prop::sample::select(vec![1usize, 3, 5]),
        1u32..=40,
    )
        .prop_flat_map(|(nodes, rf, shards)| {
            let zone = prop::option::of(0u8..3);
            (
                prop::collection::vec((zone, prop::bool::weighted(0.15)), nodes as usize),
                prop::collection::vec(
                    (
                        prop::collection::btree_set(1..=nodes + 2, 0..=6),
                        0..=nodes + 1,
                    ),
                    shards as usize,
                ),
                Just(rf),
            )
        })
        .prop_map(|(nodes, shards, rf)| Cluster {
            nodes: nodes
                .into_iter()
                .enumerate()
                .map(|(i, (zone, draining))| {
                    let id = i as NodeId + 1;
                    let node = Node {
                        id,
                        zone: zone.map(|z| format!("z{z}")),
                        draining,
                    };
                    (id, node)
                })
                .collect(),
            shards: shards
                .into_iter()
                .enumerate()
                .map(|(i, (voters, leader))| {
                    let shard = Shard {
                        leader: voters.contains(&leader).then_some(leader),
                        voters,
                        ..Shard::default()
                    };
                    (i as ShardId, shard)
                })
                .collect(),
            replication_factor: rf,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_target_is_valid_even_and_stable(c in arbitrary_cluster()) {
        let active: BTreeSet<NodeId> = c.active_nodes().map(|n| n.id).collect();
        let Ok(t) = target(&c) else {
            prop_assert!(active.len() < c.replication_factor);
            return Ok(());
        };
        prop_assert_eq!(t.voters.len(), c.shards.len());
        for (id, voters) in &t.voters {
            prop_assert_eq!(voters.len(), c.replication_factor);
            prop_assert!(voters.is_subset(&active), "{:?} on inactive nodes", voters);
            prop_assert!(voters.contains(&t.leaders[id]));
        }
        let placed = reached(c.clone(), &t);
        let replicas: BTreeMap<NodeId, usize> = placed
            .replicas_per_node()
            .into_iter()
            .filter(|(n, _)| active.contains(n))
            .collect();
        let leaders: BTreeMap<NodeId, usize> = placed
            .leaders_per_node()
            .into_iter()
            .filter(|(n, _)| active.contains(n))
            .collect();
        let zoned = c.nodes.values().any(|n| n.zone.is_some());
        if !zoned {
            prop_assert!(range(replicas.values().copied()) <= 1, "{:?}", replicas);
            prop_assert!(range(leaders.values().copied()) <= 1, "{:?}", leaders);
        }
        // Reached, it stays: no churn from a second look.
        let again = target(&placed).expect("target");
        prop_assert_eq!(&again, &t);
    }

    #[test]
    fn evening_out_never_narrows_a_shards_zone_spread(c in arbitrary_cluster()) {
        let Ok(t) = target(&c) else { return Ok(()); };
        let active: BTreeSet<NodeId> = c.active_nodes().map(|n| n.id).collect();
        for (id, voters) in &t.voters {
            let kept: BTreeSet<NodeId> = c.shards[id].voters.intersection(&active).copied().collect();
            if kept.len() == c.replication_factor {
                prop_assert!(spread(&c, voters) >= spread(&c, &kept), "{:?} -> {:?}", kept, voters);
            }
        }
    }
}
