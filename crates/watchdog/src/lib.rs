//! Watchdog devices, as Patroni's `watchdog.driver` selects them (docs/compat.md#watchdog):
//!
//! - `default`: the Linux watchdog API. Opening `/dev/watchdog` (or `watchdog.device`) starts
//!   the timer; `WDIOC_SETTIMEOUT` sets it; every write resets it; writing the magic character
//!   `V` before closing stops it (when the driver supports `WDIOF_MAGICCLOSE`). If the writer
//!   stops writing (a frozen agent), the machine resets.
//! - `testing`: Patroni's test harness. The device is a named pipe; what the ioctls would do
//!   arrives as text: `Ctimeout=<seconds>\n` for a timeout, `1` for a keepalive, `V` for the
//!   magic close. A test reads the pipe and plays the timer. Opening fails when nobody reads
//!   it (Patroni's would block forever).
//!
//! Every call is one short syscall on a device or a pipe, so callers may make it from async
//! code. The HA policy (when to arm, which timeout, what `required` means) is the agent's.

#![deny(unsafe_code)]

mod linux;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("cannot open watchdog device {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("watchdog device {0} is closed")]
    Closed(PathBuf),
    #[error("{what} on watchdog device {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid watchdog timeout {0} s: the device takes 1 to 65534 seconds")]
    InvalidTimeout(u64),
    #[error("unknown watchdog driver {0:?} (known: default, testing)")]
    UnknownDriver(String),
}

/// `watchdog.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The Linux watchdog API (`default`).
    Linux,
    /// Patroni's named-pipe harness (`testing`).
    Testing,
}

impl Driver {
    pub fn parse(name: &str) -> Result<Driver, WatchdogError> {
        match name {
            "default" => Ok(Driver::Linux),
            "testing" => Ok(Driver::Testing),
            other => Err(WatchdogError::UnknownDriver(other.to_string())),
        }
    }
}

/// One watchdog device, opened or not. Dropping an open device closes it without the magic
/// character: the timer keeps running and the machine resets one timeout later, which is
/// what a crashing agent must get.
#[derive(Debug)]
pub struct Device {
    driver: Driver,
    path: PathBuf,
    file: Option<File>,
    /// The testing driver cannot be asked; it reports what was last set (Patroni: 60 s).
    testing_timeout: u32,
    identity: Option<linux::Support>,
}

/// The testing driver's timeout before one is set (Patroni's `TestingWatchdogDevice`).
const TESTING_DEFAULT_TIMEOUT: u32 = 60;

impl Device {
    pub fn new(driver: Driver, path: impl Into<PathBuf>) -> Device {
        Device {
            driver,
            path: path.into(),
            file: None,
            testing_timeout: TESTING_DEFAULT_TIMEOUT,
            identity: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device exists and we may write to it (Patroni's `is_healthy`): opening it is
    /// expected to work.
    pub fn usable(&self) -> bool {
        nix::unistd::access(&self.path, nix::unistd::AccessFlags::W_OK).is_ok()
    }

    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Opens the device, which starts the timer (with the device's current timeout).
    pub fn open(&mut self) -> Result<(), WatchdogError> {
        if self.file.is_some() {
            return Ok(());
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        if self.driver == Driver::Testing {
            // ENXIO at once when no test reads the pipe, instead of blocking forever.
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options
            .open(&self.path)
            .map_err(|source| WatchdogError::Open {
                path: self.path.clone(),
                source,
            })?;
        self.file = Some(file);
        if self.driver == Driver::Linux {
            self.identity = linux::support(self.file()?).ok();
        }
        Ok(())
    }

    fn file(&self) -> Result<&File, WatchdogError> {
        self.file
            .as_ref()
            .ok_or_else(|| WatchdogError::Closed(self.path.clone()))
    }

    fn write(&mut self, what: &'static str, bytes: &[u8]) -> Result<(), WatchdogError> {
        let path = self.path.clone();
        let mut file = self.file()?;
        file.write_all(bytes)
            .map_err(|source| WatchdogError::Io { what, path, source })
    }

    /// The timeout can be set (`WDIOF_SETTIMEOUT`).
    pub fn can_set_timeout(&self) -> bool {
        match self.driver {
            Driver::Testing => true,
            Driver::Linux => self.identity.as_ref().is_some_and(|s| s.settimeout),
        }
    }

    /// Closing with the magic character stops the timer (`WDIOF_MAGICCLOSE`). Without it the
    /// machine resets one timeout after the last keepalive, whatever we do.
    pub fn can_be_disabled(&self) -> bool {
        match self.driver {
            Driver::Testing => true,
            Driver::Linux => self.identity.as_ref().is_some_and(|s| s.magicclose),
        }
    }

    pub fn set_timeout(&mut self, seconds: u64) -> Result<(), WatchdogError> {
        let secs = u32::try_from(seconds)
            .ok()
            .filter(|s| (1..0xFFFF).contains(s))
            .ok_or(WatchdogError::InvalidTimeout(seconds))?;
        match self.driver {
            Driver::Testing => {
                self.write(
                    "setting the timeout",
                    format!("Ctimeout={secs}\n").as_bytes(),
                )?;
                self.testing_timeout = secs;
                Ok(())
            }
            Driver::Linux => {
                linux::set_timeout(self.file()?, secs).map_err(|source| WatchdogError::Io {
                    what: "setting the timeout",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// The timeout in effect, in seconds.
    pub fn timeout(&self) -> Result<u32, WatchdogError> {
        match self.driver {
            Driver::Testing => Ok(self.testing_timeout),
            Driver::Linux => linux::timeout(self.file()?).map_err(|source| WatchdogError::Io {
                what: "reading the timeout",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Resets the timer.
    pub fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.write("keepalive", b"1")
    }

    /// Stops the timer (magic close) and closes the device.
    pub fn close(&mut self) -> Result<(), WatchdogError> {
        if self.file.is_none() {
            return Ok(());
        }
        let magic = self.write("magic close", b"V");
        self.file = None;
        magic
    }

    /// For logs: "Linux watchdog device softdog (firmware 0) at /dev/watchdog1".
    pub fn describe(&self) -> String {
        match self.driver {
            Driver::Testing => format!("watchdog test harness at {}", self.path.display()),
            Driver::Linux => {
                let identity = self
                    .identity
                    .as_ref()
                    .map(|s| s.identity.clone())
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| "Linux watchdog device".to_string());
                format!("{identity} at {}", self.path.display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn fifo(dir: &Path) -> PathBuf {
        let path = dir.join("watchdog");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        path
    }

    #[test]
    fn testing_driver_writes_patronis_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo(dir.path());
        let mut device = Device::new(Driver::Testing, &path);
        assert!(device.usable());
        // Nobody reads the pipe: opening fails instead of hanging.
        let err = device.open().unwrap_err();
        assert!(
            err.to_string().contains("cannot open watchdog device"),
            "{err}"
        );

        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        device.open().unwrap();
        device.set_timeout(3).unwrap();
        assert_eq!(device.timeout().unwrap(), 3);
        device.keepalive().unwrap();
        device.keepalive().unwrap();
        device.close().unwrap();
        assert!(!device.is_open());
        let mut got = String::new();
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "Ctimeout=3\n11V");
    }

    #[test]
    fn missing_device_is_not_usable_and_timeouts_are_bounded() {
        let mut device = Device::new(Driver::Linux, "/nonexistent/watchdog");
        assert!(!device.usable());
        assert!(device.open().is_err());
        assert!(matches!(
            device.set_timeout(0),
            Err(WatchdogError::InvalidTimeout(0))
        ));
        assert!(matches!(device.keepalive(), Err(WatchdogError::Closed(_))));
        assert!(Driver::parse("bogus").is_err());
    }
}
