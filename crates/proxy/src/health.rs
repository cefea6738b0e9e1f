//! REST health checks: each member's own answer to `GET /primary` and `GET /replica[?lag=N]`
//! (the endpoints HAProxy uses), turned into verdicts with `rise`/`fall` hysteresis.
//!
//! A member that explicitly answers "not primary" loses the primary verdict at once (a write
//! must never go to a node that says it is not the primary); transport failures and the
//! replica checks count towards `fall` as in HAProxy.

use crate::config::HealthConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::debug;

/// A check's state with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Verdict {
    /// Never checked: not routable.
    #[default]
    Unknown,
    /// Routable; `fails` consecutive failures seen so far.
    Up { fails: u32 },
    /// Not routable; `oks` consecutive successes seen so far.
    Down { oks: u32 },
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// HTTP 200 (and, for `/primary`, the body says `role: master`).
    Yes,
    /// The member answered with another status (or a non-primary role).
    No(u16),
    /// No answer: connection refused, timeout, malformed response.
    Unreachable(String),
}

impl Verdict {
    pub fn is_up(self) -> bool {
        matches!(self, Verdict::Up { .. })
    }

    /// Applies one answer. `fast_rise`: one success is enough (the DCS already agrees);
    /// `fast_fall`: an explicit negative answer takes the verdict down at once.
    pub fn observe(
        self,
        answer: &Answer,
        h: &HealthConfig,
        fast_rise: bool,
        fast_fall: bool,
    ) -> Verdict {
        let ok = matches!(answer, Answer::Yes);
        match (self, ok) {
            (Verdict::Unknown, true) => Verdict::Up { fails: 0 },
            (Verdict::Unknown, false) => Verdict::Down { oks: 0 },
            (Verdict::Up { .. }, true) => Verdict::Up { fails: 0 },
            (Verdict::Up { .. }, false) if fast_fall && matches!(answer, Answer::No(_)) => {
                Verdict::Down { oks: 0 }
            }
            (Verdict::Up { fails }, false) if fails + 1 >= h.fall => Verdict::Down { oks: 0 },
            (Verdict::Up { fails }, false) => Verdict::Up { fails: fails + 1 },
            (Verdict::Down { oks }, true) if fast_rise || oks + 1 >= h.rise => {
                Verdict::Up { fails: 0 }
            }
            (Verdict::Down { oks }, true) => Verdict::Down { oks: oks + 1 },
            (Verdict::Down { .. }, false) => Verdict::Down { oks: 0 },
        }
    }
}

impl Verdict {
    /// [`observe`](Self::observe) for a read target: any failed check, an explicit "not a
    /// replica" (a replica whose stream went silent answers 503) or no answer in time, takes
    /// it out of the read rotation at once, so a replica cut off from the cluster stops
    /// serving reads within one check interval plus one timeout; `rise` still applies on the
    /// way back. Reads have somewhere else to go (other replicas, `fallback: primary`).
    pub fn observe_read(self, answer: &Answer, h: &HealthConfig) -> Verdict {
        match (self, answer) {
            (Verdict::Up { .. }, Answer::No(_) | Answer::Unreachable(_)) => {
                Verdict::Down { oks: 0 }
            }
            _ => self.observe(answer, h, false, false),
        }
    }
}

/// Everything known about one member's health.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemberHealth {
    pub primary: Verdict,
    /// `GET /replica` without a lag limit.
    pub replica: Verdict,
    /// `GET /replica?lag=N` per configured `max_lag`.
    pub replica_lag: BTreeMap<u64, Verdict>,
    #[serde(skip)]
    pub last_checked: Option<Instant>,
    /// Short text of the last round: `primary=200 replica=503`.
    pub last_result: String,
    pub last_latency_ms: f64,
}

impl MemberHealth {
    /// The replica verdict for a listener with `max_lag`.
    pub fn replica_within(&self, max_lag: Option<u64>) -> Verdict {
        match max_lag {
            None => self.replica,
            Some(lag) => self.replica_lag.get(&lag).copied().unwrap_or_default(),
        }
    }
}

/// One round of checks for one member.
#[derive(Debug, Clone)]
pub struct Report {
    pub member: String,
    pub primary: Answer,
    pub replica: Answer,
    pub replica_lag: Vec<(u64, Answer)>,
    pub at: Instant,
    pub latency: Duration,
}

impl Report {
    pub fn summary(&self) -> String {
        let show = |a: &Answer| match a {
            Answer::Yes => "200".to_string(),
            Answer::No(code) => code.to_string(),
            Answer::Unreachable(e) => format!("unreachable ({e})"),
        };
        let mut s = format!(
            "primary={} replica={}",
            show(&self.primary),
            show(&self.replica)
        );
        for (lag, a) in &self.replica_lag {
            s.push_str(&format!(" replica?lag={lag}={}", show(a)));
        }
        s
    }
}

/// Controls one running checker.
pub struct Checker {
    pub api_base: String,
    poke: Arc<Notify>,
    fast: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Checker {
    /// Starts checking `member` at `api_base` (`http://host:port`), sending reports on `tx`.
    pub fn spawn(
        member: String,
        api_base: String,
        lags: Vec<u64>,
        cfg: HealthConfig,
        client: reqwest::Client,
        tx: mpsc::Sender<Report>,
    ) -> Checker {
        let poke = Arc::new(Notify::new());
        let fast = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(check_loop(
            member,
            api_base.clone(),
            lags,
            cfg,
            client,
            tx,
            poke.clone(),
            fast.clone(),
        ));
        Checker {
            api_base,
            poke,
            fast,
            task,
        }
    }

    /// Check now, without waiting for the interval.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Check every `fast_interval` (a listener is holding clients for this member).
    pub fn set_fast(&self, fast: bool) {
        if self.fast.swap(fast, Ordering::Relaxed) != fast && fast {
            self.poke.notify_one();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn check_loop(
    member: String,
    api_base: String,
    lags: Vec<u64>,
    cfg: HealthConfig,
    client: reqwest::Client,
    tx: mpsc::Sender<Report>,
    poke: Arc<Notify>,
    fast: Arc<AtomicBool>,
) {
    let primary_url = format!("{api_base}/primary");
    let replica_url = format!("{api_base}/replica");
    let lag_urls: Vec<String> = lags
        .iter()
        .map(|lag| format!("{api_base}/replica?lag={lag}"))
        .collect();
    loop {
        let started = Instant::now();
        let primary = probe(&client, &primary_url, cfg.timeout, true);
        let replica = probe(&client, &replica_url, cfg.timeout, false);
        let lagged = futures::future::join_all(
            lag_urls
                .iter()
                .map(|url| probe(&client, url, cfg.timeout, false)),
        );
        let (primary, replica, lagged) = tokio::join!(primary, replica, lagged);
        let report = Report {
            member: member.clone(),
            primary,
            replica,
            replica_lag: lags.iter().copied().zip(lagged).collect(),
            at: Instant::now(),
            latency: started.elapsed(),
        };
        debug!(member = %member, result = %report.summary(), "health check");
        if tx.send(report).await.is_err() {
            return;
        }
        let every = if fast.load(Ordering::Relaxed) {
            cfg.fast_interval
        } else {
            cfg.interval
        };
        tokio::select! {
            _ = tokio::time::sleep_until(started + every) => {}
            _ = poke.notified() => {}
        }
    }
}

/// One GET. For `/primary`, a 200 counts only if the body's `role` is a primary role: the
/// leader key may already be ours while PostgreSQL is still finishing its promotion.
async fn probe(client: &reqwest::Client, url: &str, timeout: Duration, primary: bool) -> Answer {
    let response = match tokio::time::timeout(timeout, client.get(url).send()).await {
        Err(_) => return Answer::Unreachable(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => return Answer::Unreachable(short_error(&e)),
        Ok(Ok(r)) => r,
    };
    let code = response.status().as_u16();
    if code != 200 {
        return Answer::No(code);
    }
    if !primary {
        return Answer::Yes;
    }
    let body = match tokio::time::timeout(timeout, response.bytes()).await {
        Ok(Ok(b)) => b,
        _ => return Answer::Unreachable("body not received".into()),
    };
    let role = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("role").and_then(|r| r.as_str()).map(str::to_string));
    match role.as_deref() {
        Some("master") | Some("primary") | None => Answer::Yes,
        Some(_) => Answer::No(200),
    }
}

fn short_error(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timeout".into()
    } else {
        let mut s = e.to_string();
        s.truncate(80);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> HealthConfig {
        HealthConfig {
            interval: Duration::from_secs(1),
            fast_interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn a_read_target_falls_at_the_first_failure() {
        let h = h();
        let up = Verdict::Unknown.observe_read(&Answer::Yes, &h);
        assert!(up.is_up());
        assert_eq!(
            up.observe_read(&Answer::No(503), &h),
            Verdict::Down { oks: 0 }
        );
        assert_eq!(
            up.observe_read(&Answer::Unreachable("t".into()), &h),
            Verdict::Down { oks: 0 }
        );
        let down = Verdict::Down { oks: 0 };
        assert_eq!(
            down.observe_read(&Answer::Yes, &h),
            Verdict::Down { oks: 1 }
        );
        assert!(down
            .observe_read(&Answer::Yes, &h)
            .observe_read(&Answer::Yes, &h)
            .is_up());
    }

    #[test]
    fn rise_and_fall() {
        let h = h();
        let no = Answer::Unreachable("x".into());
        let v = Verdict::Unknown.observe(&Answer::Yes, &h, false, false);
        assert!(v.is_up());
        let v = v.observe(&no, &h, false, false);
        let v = v.observe(&no, &h, false, false);
        assert!(v.is_up(), "two failures of fall=3 keep it up");
        let v = v.observe(&no, &h, false, false);
        assert_eq!(v, Verdict::Down { oks: 0 });
        let v = v.observe(&Answer::Yes, &h, false, false);
        assert_eq!(v, Verdict::Down { oks: 1 });
        assert!(v.observe(&Answer::Yes, &h, false, false).is_up());
        assert!(Verdict::Down { oks: 0 }
            .observe(&Answer::Yes, &h, true, false)
            .is_up());
    }

    /// The leader key still names it: one 503 (a missed live-status deadline under load) is
    /// a failure counted towards `fall`, not a verdict.
    #[test]
    fn the_leader_answering_503_once_stays_routed() {
        let h = h();
        let up = Verdict::Up { fails: 0 };
        let once = up.observe(&Answer::No(503), &h, true, false);
        assert!(once.is_up(), "{once:?}");
        let down = once.observe(&Answer::No(503), &h, true, false).observe(
            &Answer::No(503),
            &h,
            true,
            false,
        );
        assert!(!down.is_up(), "fall=3 failures in a row: {down:?}");
    }

    #[test]
    fn explicit_not_primary_is_immediate() {
        let h = h();
        let up = Verdict::Up { fails: 0 };
        assert_eq!(
            up.observe(&Answer::No(503), &h, false, true),
            Verdict::Down { oks: 0 }
        );
        assert!(up
            .observe(&Answer::Unreachable("t".into()), &h, false, true)
            .is_up());
        assert!(
            Verdict::Unknown.observe(&Answer::No(503), &h, false, true) == Verdict::Down { oks: 0 }
        );
    }
}
