//! The watchdog while primary (docs/compat.md#watchdog), as Patroni runs it: armed when this
//! member holds the leader lock with PostgreSQL running as a primary, with the timeout
//! `ttl - safety_margin`; kept alive after every confirmed renewal of the lease; disabled (magic
//! close) once PostgreSQL no longer runs as a primary, in pause, and after a clean stop. A
//! frozen agent stops the keepalives, and the device resets the machine before the lease can
//! expire and another member promotes: the fence (`crate::fence`) cannot act for a process
//! that does not run.
//!
//! `mode: required` refuses leadership without a working device: such a member does not race
//! for the lock, refuses a promotion, and a leader whose device cannot be armed demotes.
//!
//! One deviation: without `safety_margin` in the configuration, the timeout is the lease's
//! fencing deadline rounded up to whole seconds (ttl 4 s: 3 s; ttl 30 s: 25 s, Patroni's
//! default), so the watchdog fires just after the fence would have and before the lease
//! expires. Patroni's fixed default of 5 s would leave pgherd's default ttl of 4 s no timeout.

use crate::world::{WatchdogDevice, WatchdogDevices};
use pgherd_config::{Watchdog as WatchdogConfig, WatchdogMode};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// The watchdog shared by the HA loop, the lease (keepalives) and the fence (disable once it
/// stopped PostgreSQL).
#[derive(Clone)]
pub struct SharedWatchdog(Arc<Mutex<Watchdog>>);

impl SharedWatchdog {
    pub fn new(watchdog: Watchdog) -> SharedWatchdog {
        SharedWatchdog(Arc::new(Mutex::new(watchdog)))
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Watchdog) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The timing a watchdog needs from the dynamic configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub ttl: Duration,
    pub loop_wait: Duration,
    /// The lease's fencing margin (`crate::settings`).
    pub fencing_margin: Duration,
}

pub struct Watchdog {
    devices: Arc<dyn WatchdogDevices>,
    cfg: WatchdogConfig,
    timing: Timing,
    /// `None`: no device (mode off, or a driver without a device here).
    device: Option<Box<dyn WatchdogDevice>>,
    /// The timeout set on the running device.
    armed_timeout: Option<u64>,
    /// Activation failed: in `required` mode, no race for the lock for one ttl.
    failed_at: Option<Instant>,
}

impl Watchdog {
    pub fn new(devices: Arc<dyn WatchdogDevices>, cfg: &WatchdogConfig, timing: Timing) -> Self {
        let device = open_device(devices.as_ref(), cfg);
        Watchdog {
            devices,
            cfg: cfg.clone(),
            timing,
            device,
            armed_timeout: None,
            failed_at: None,
        }
    }

    /// A reloaded `watchdog:` section or new dynamic timing. A running device gets the new
    /// timeout now (Patroni waits for the next keepalive, which follows within one loop);
    /// a new device or driver replaces the old one (disarmed first).
    pub fn reconfigure(&mut self, cfg: &WatchdogConfig, timing: Timing) {
        let same_device = cfg.driver == self.cfg.driver && cfg.device == self.cfg.device;
        let was_running = self.is_running();
        if cfg.mode == WatchdogMode::Off || !same_device {
            self.disable();
        }
        self.cfg = cfg.clone();
        self.timing = timing;
        self.failed_at = None;
        if !same_device || self.device.is_none() {
            self.device = open_device(self.devices.as_ref(), cfg);
        }
        if was_running && cfg.mode != WatchdogMode::Off {
            // Re-arm with the new device or timeout.
            self.activate();
        }
    }

    /// `ttl - safety_margin` in whole seconds (`safety_margin: -1`: ttl / 2); without a
    /// configured margin, the fencing deadline rounded up.
    pub fn timeout(&self) -> u64 {
        let ttl = self.timing.ttl.as_secs_f64();
        let secs = match self.cfg.safety_margin {
            Some(-1) => (ttl / 2.0).floor(),
            Some(margin) => ttl.floor() - margin as f64,
            None => (ttl - self.timing.fencing_margin.as_secs_f64()).ceil(),
        };
        if secs < 1.0 {
            0
        } else {
            secs as u64
        }
    }

    /// How much later than one loop_wait a keepalive may come (negative: no safe timeout).
    fn timing_slack(&self) -> f64 {
        self.timeout() as f64 - self.timing.loop_wait.as_secs_f64()
    }

    pub fn is_running(&self) -> bool {
        self.device.as_ref().is_some_and(|d| d.is_open())
    }

    /// May this member lead? Only `required` mode says no: without a safe timeout, without a
    /// usable device, or within one ttl after an activation failed (Patroni's `is_healthy`,
    /// plus the failed activation so that a member does not win, fail and demote in a loop).
    pub fn allows_leadership(&self) -> bool {
        if self.cfg.mode != WatchdogMode::Required {
            return true;
        }
        let recently_failed = self
            .failed_at
            .is_some_and(|at| at.elapsed() < self.timing.ttl);
        self.timing_slack() >= 0.0
            && !recently_failed
            && self
                .device
                .as_ref()
                .is_some_and(|d| d.is_open() || d.usable())
    }

    /// Arms the device (if not running yet). `false`: leadership must be refused (`required`
    /// mode and no safe watchdog).
    pub fn activate(&mut self) -> bool {
        let required = self.cfg.mode == WatchdogMode::Required;
        if self.cfg.mode == WatchdogMode::Off {
            return true;
        }
        let timeout = self.timeout();
        if self.timing_slack() < 0.0 || timeout == 0 {
            warn!(
                "watchdog not supported: its timeout ({timeout} s, ttl {:?} minus the safety margin) is shorter than loop_wait ({:?})",
                self.timing.ttl, self.timing.loop_wait
            );
            return self.failed(required);
        }
        if self.is_running() && self.armed_timeout == Some(timeout) {
            return true;
        }
        let Some(device) = self.device.as_mut() else {
            if required {
                error!(
                    "configuration requires a watchdog, but there is no device for driver {:?}",
                    self.cfg.driver
                );
            }
            return self.failed(required);
        };
        let fresh = !device.is_open();
        let armed = (|| -> anyhow::Result<u32> {
            device.open()?;
            if device.can_set_timeout() {
                device.set_timeout(timeout)?;
            }
            device.timeout()
        })();
        let actual = match armed {
            Ok(actual) => actual,
            Err(e) => {
                warn!("could not activate {}: {e:#}", device.describe());
                // A device we opened but could not configure: leave it running only if it
                // cannot be disarmed (it resets the machine otherwise).
                if device.can_be_disabled() {
                    let _ = device.close();
                }
                return self.failed(required);
            }
        };
        if u64::from(actual) > timeout {
            if required {
                error!("configuration requires a watchdog, but a safe timeout of {timeout} s could not be set (the device's is {actual} s)");
                if device.can_be_disabled() {
                    let _ = device.close();
                }
                return self.failed(true);
            }
            warn!("watchdog timeout {actual} s does not ensure a safe stop within {timeout} s");
        }
        if !device.can_be_disabled() {
            warn!("the watchdog device cannot be disabled: the machine resets after pgherd loses the leader lock");
        }
        if fresh || self.armed_timeout != Some(timeout) {
            info!(
                "{} activated with {actual} s timeout, timing slack {:.1} s",
                device.describe(),
                self.timing_slack()
            );
        }
        self.armed_timeout = Some(timeout);
        self.failed_at = None;
        true
    }

    fn failed(&mut self, required: bool) -> bool {
        if required {
            self.failed_at = Some(Instant::now());
        } else if !self.is_running() {
            // `automatic`: carry on without it, and do not try (and warn) again every cycle
            // (Patroni falls back to its null watchdog); a reload opens the device again.
            self.device = None;
        }
        !required
    }

    /// After a confirmed lease renewal: one more ttl without a reset.
    pub fn keepalive(&mut self) {
        let Some(device) = self.device.as_mut().filter(|d| d.is_open()) else {
            return;
        };
        if let Err(e) = device.keepalive() {
            error!("watchdog keepalive failed: {e:#}");
        }
    }

    /// Magic close: PostgreSQL no longer runs as a primary (or we are paused, or stopping).
    pub fn disable(&mut self) {
        let Some(device) = self.device.as_mut().filter(|d| d.is_open()) else {
            return;
        };
        if !device.can_be_disabled() {
            // Give the operator one more timeout to clean up (as Patroni).
            let _ = device.keepalive();
            warn!("the watchdog device cannot be disabled: the machine resets when it times out");
        }
        match device.close() {
            Ok(()) => info!("{} disabled", device.describe()),
            Err(e) => error!("could not disable the watchdog: {e:#}"),
        }
        self.armed_timeout = None;
    }
}

fn open_device(
    devices: &dyn WatchdogDevices,
    cfg: &WatchdogConfig,
) -> Option<Box<dyn WatchdogDevice>> {
    if cfg.mode == WatchdogMode::Off {
        return None;
    }
    let device = devices.device(cfg);
    if device.is_none() && cfg.mode == WatchdogMode::Required {
        error!(
            "configuration requires a watchdog, but driver {:?} has no device here",
            cfg.driver
        );
    }
    device
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A device that records what it was told.
    #[derive(Default, Clone)]
    struct Log(Arc<Mutex<Vec<String>>>);

    struct FakeDevice {
        log: Log,
        open: bool,
        usable: bool,
        timeout: u32,
        max_timeout: u32,
    }

    impl WatchdogDevice for FakeDevice {
        fn usable(&self) -> bool {
            self.usable
        }
        fn is_open(&self) -> bool {
            self.open
        }
        fn open(&mut self) -> anyhow::Result<()> {
            if !self.usable {
                self.log.0.lock().unwrap().push("open failed".into());
                anyhow::bail!("no such device");
            }
            if self.open {
                return Ok(());
            }
            self.open = true;
            self.log.0.lock().unwrap().push("open".into());
            Ok(())
        }
        fn can_set_timeout(&self) -> bool {
            true
        }
        fn can_be_disabled(&self) -> bool {
            true
        }
        fn set_timeout(&mut self, seconds: u64) -> anyhow::Result<()> {
            self.timeout = (seconds as u32).min(self.max_timeout);
            self.log
                .0
                .lock()
                .unwrap()
                .push(format!("timeout={seconds}"));
            Ok(())
        }
        fn timeout(&self) -> anyhow::Result<u32> {
            Ok(self.timeout)
        }
        fn keepalive(&mut self) -> anyhow::Result<()> {
            self.log.0.lock().unwrap().push("keepalive".into());
            Ok(())
        }
        fn close(&mut self) -> anyhow::Result<()> {
            self.open = false;
            self.log.0.lock().unwrap().push("close".into());
            Ok(())
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    struct FakeDevices {
        log: Log,
        usable: bool,
        max_timeout: u32,
    }

    impl WatchdogDevices for FakeDevices {
        fn device(&self, _cfg: &WatchdogConfig) -> Option<Box<dyn WatchdogDevice>> {
            Some(Box::new(FakeDevice {
                log: self.log.clone(),
                open: false,
                usable: self.usable,
                timeout: 60,
                max_timeout: self.max_timeout,
            }))
        }
    }

    fn cfg(mode: WatchdogMode, safety_margin: Option<i64>) -> WatchdogConfig {
        WatchdogConfig {
            mode,
            device: PathBuf::from("/dev/watchdog"),
            safety_margin,
            driver: "default".into(),
        }
    }

    fn timing(ttl: u64, loop_wait: u64) -> Timing {
        Timing {
            ttl: Duration::from_secs(ttl),
            loop_wait: Duration::from_secs(loop_wait),
            fencing_margin: (Duration::from_secs(ttl) / 4)
                .clamp(Duration::from_millis(1500), Duration::from_secs(5)),
        }
    }

    fn watchdog(
        mode: WatchdogMode,
        margin: Option<i64>,
        usable: bool,
        t: Timing,
    ) -> (Watchdog, Log) {
        let log = Log::default();
        let devices = Arc::new(FakeDevices {
            log: log.clone(),
            usable,
            max_timeout: 600,
        });
        (Watchdog::new(devices, &cfg(mode, margin), t), log)
    }

    #[test]
    fn timeouts_follow_patroni_and_the_fencing_deadline() {
        let t = |margin, ttl| {
            watchdog(WatchdogMode::Automatic, margin, true, timing(ttl, 1))
                .0
                .timeout()
        };
        assert_eq!(t(Some(5), 30), 25);
        assert_eq!(t(Some(-1), 30), 15);
        assert_eq!(t(None, 30), 25);
        assert_eq!(t(None, 4), 3);
        assert_eq!(t(None, 10), 8);
        assert_eq!(t(Some(5), 4), 0);
    }

    #[test]
    fn armed_kept_alive_and_disabled() {
        let (mut w, log) = watchdog(WatchdogMode::Automatic, None, true, timing(10, 1));
        w.keepalive(); // not armed: nothing
        assert!(w.activate());
        assert!(w.is_running());
        w.keepalive();
        w.disable();
        assert!(!w.is_running());
        assert_eq!(
            *log.0.lock().unwrap(),
            vec!["open", "timeout=8", "keepalive", "close"]
        );
    }

    #[test]
    fn required_mode_refuses_leadership_without_a_safe_device() {
        let (mut w, _) = watchdog(WatchdogMode::Required, None, false, timing(10, 1));
        assert!(!w.allows_leadership());
        assert!(!w.activate());
        // Automatic mode carries on without it, and tries the device once only (no
        // warning every cycle), until a reload.
        let (mut w, log) = watchdog(WatchdogMode::Automatic, None, false, timing(10, 1));
        assert!(w.allows_leadership());
        assert!(w.activate());
        assert!(!w.is_running());
        assert!(w.activate());
        assert_eq!(*log.0.lock().unwrap(), vec!["open failed", "close"]);
        w.reconfigure(&cfg(WatchdogMode::Automatic, None), timing(10, 1));
        assert!(w.activate());
        assert_eq!(
            *log.0.lock().unwrap(),
            vec!["open failed", "close", "open failed", "close"]
        );
        // A timeout shorter than loop_wait is no watchdog.
        let (mut w, _) = watchdog(WatchdogMode::Required, Some(8), true, timing(10, 5));
        assert!(!w.allows_leadership());
        assert!(!w.activate());
    }

    #[test]
    fn a_timeout_change_rearms_a_running_device() {
        let (mut w, log) = watchdog(WatchdogMode::Automatic, None, true, timing(10, 1));
        assert!(w.activate());
        w.reconfigure(&cfg(WatchdogMode::Automatic, None), timing(30, 10));
        assert!(w.is_running());
        w.reconfigure(&cfg(WatchdogMode::Off, None), timing(30, 10));
        assert!(!w.is_running());
        assert_eq!(
            *log.0.lock().unwrap(),
            vec!["open", "timeout=8", "timeout=25", "close"]
        );
    }
}
