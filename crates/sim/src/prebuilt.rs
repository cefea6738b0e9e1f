//! A cluster as a finished bootstrap leaves it, to start most runs from (bootstrapping from
//! empty data directories costs ~10 simulated seconds; every tenth run still does it).

use crate::world::{lock, Shared};
use pgherd_dcs::memory::MemoryDcs;
use pgherd_dcs::{Dcs, MemberData, Role, Status};
use pgherd_ha::{DataDir, Replication};
use std::time::Duration;

/// What the former agents wrote in the DCS.
struct Keys {
    sysid: String,
    config: String,
    optime: u64,
    leader: String,
    members: Vec<(String, Role)>,
}

/// One primary (not tagged nofailover), every other member streaming from it with its slot,
/// the DCS keys written by the members' former agents (whose leases then expire unless the
/// new agents take the keys over). The agents then start as after a restart of every agent
/// at once.
pub(crate) async fn prebuild(world: &Shared) {
    let keys = build_servers(&mut lock(world));
    let (store, layout, ttl) = {
        let w = lock(world);
        (
            w.store.clone(),
            w.layout.clone(),
            Duration::from_millis(w.schedule.cluster.ttl),
        )
    };
    let client = |name: Option<&str>| {
        MemoryDcs::new(store.clone(), layout.clone(), name.map(str::to_string), ttl)
    };
    let ctl = client(None);
    let _ = ctl.write_initialize(&keys.sysid).await;
    let _ = ctl.set_config_value(&keys.config, None).await;
    let status = Status {
        optime: keys.optime,
        ..Status::default()
    };
    let _ = ctl.write_status(&status).await;
    for (name, role) in &keys.members {
        let former = client(Some(name));
        let data = MemberData {
            conn_url: format!("postgres://{name}:5432/postgres"),
            api_url: format!("http://{name}:8008/patroni"),
            state: "running".into(),
            role: Some(*role),
            version: "3.0.2".into(),
            xlog_location: Some(keys.optime),
            timeline: Some(1),
            ..MemberData::default()
        };
        let _ = former.touch_member(&data).await;
        if *name == keys.leader {
            let _ = former.attempt_to_acquire_leader().await;
        }
    }
    lock(world).changed();
}

/// The servers: one primary, standbys streaming from it with their slots.
fn build_servers(w: &mut crate::world::World) -> Keys {
    let eligible: Vec<usize> = (0..w.nodes.len())
        .filter(|&i| !w.nodes[i].settings.nofailover)
        .collect();
    // Schedules never tag every member nofailover; fall back to the first one anyway.
    let l = eligible
        .get(w.rng.index(eligible.len()))
        .copied()
        .unwrap_or(0);
    let sysid = format!("7{:018}", 1_000_000_000 + w.schedule.seed % 1_000_000_000);
    let content = w.content();
    let mut wal = crate::wal::Wal::new_cluster(content);
    wal.end += w.rng.range(10_000, 100_000);
    let leader = w.nodes[l].name.clone();
    let names: Vec<String> = w.nodes.iter().map(|x| x.name.clone()).collect();
    for (i, name) in names.iter().enumerate() {
        let pg = &mut w.nodes[i].pg;
        pg.data = DataDir::Initialized {
            sysid: sysid.clone(),
        };
        pg.wal = wal.clone();
        pg.control = crate::pg::Control::InRecovery;
        if i == l {
            pg.conf = Replication::Primary;
            pg.slots = names
                .iter()
                .filter(|n| **n != leader)
                .map(|n| pgherd_dcs::slot_name_for_member(n))
                .collect();
        } else {
            pg.conf = Replication::From(leader.clone());
            pg.conf_slot = Some(pgherd_dcs::slot_name_for_member(name));
        }
        pg.begin_start(0);
        pg.accepting = true;
    }
    let epoch = w.nodes[l].pg.epoch;
    for i in (0..w.nodes.len()).filter(|&i| i != l) {
        w.nodes[i].pg.streaming_from = Some((leader.clone(), epoch));
    }
    Keys {
        sysid,
        config: crate::node::bootstrap_dcs_json(w, l),
        optime: wal.end,
        members: names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.clone(),
                    if i == l { Role::Primary } else { Role::Replica },
                )
            })
            .collect(),
        leader,
    }
}
