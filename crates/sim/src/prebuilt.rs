//! A cluster as a finished bootstrap leaves it, to start most runs from (bootstrapping from
//! empty data directories costs ~10 simulated seconds; every tenth run still does it).

use crate::world::World;

impl World {
    /// A cluster as a bootstrap leaves it: one primary (not tagged nofailover), every other
    /// member streaming from it, the DCS keys and leases written. The agents then start as
    /// after a restart of every agent at once.
    pub(crate) fn prebuild(&mut self) {
        let eligible: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].settings.nofailover)
            .collect();
        // Schedules never tag every member nofailover; fall back to the first one anyway.
        let l = eligible
            .get(self.rng.index(eligible.len()))
            .copied()
            .unwrap_or(0);
        let sysid = format!(
            "7{:018}",
            1_000_000_000 + self.schedule.seed % 1_000_000_000
        );
        let content = self.content();
        let mut wal = crate::wal::Wal::new_cluster(content);
        wal.end += self.rng.range(10_000, 100_000);
        let leader = self.nodes[l].name.clone();
        let ttl = self.schedule.cluster.ttl;
        let mut leases = Vec::new();
        for i in 0..self.nodes.len() {
            let pg = &mut self.nodes[i].pg;
            pg.data = pgherd_ha::DataDir::Initialized {
                sysid: sysid.clone(),
            };
            pg.wal = wal.clone();
            pg.begin_start((i != l).then(|| leader.clone()));
            pg.accepting = true;
            pg.control = crate::pg::Control::InRecovery;
            leases.push(self.dcs.grant(0, ttl));
        }
        for i in 0..self.nodes.len() {
            if i != l {
                let epoch = self.nodes[l].pg.epoch;
                self.nodes[i].pg.streaming_from = Some((leader.clone(), epoch));
            }
        }
        self.dcs.prebuild(&sysid, &leader, leases[l], wal.end, ttl);
        for &lease in &leases {
            self.schedule_lease_check(lease, ttl);
            let _ = self.dcs.needs_check(lease);
        }
        let names: Vec<String> = self.nodes.iter().map(|x| x.name.clone()).collect();
        for (i, name) in names.iter().enumerate() {
            let data = pgherd_dcs::MemberData {
                conn_url: format!("postgres://{name}:5432/postgres"),
                api_url: format!("http://{name}:8008/patroni"),
                state: "running".into(),
                role: Some(if i == l {
                    pgherd_dcs::Role::Primary
                } else {
                    pgherd_dcs::Role::Replica
                }),
                version: "3.0.2".into(),
                xlog_location: Some(wal.end),
                timeline: Some(1),
                ..pgherd_dcs::MemberData::default()
            };
            self.dcs.prebuild_member(name, data, leases[i]);
        }
        self.stats.leaders.push((0, leader));
    }
}
