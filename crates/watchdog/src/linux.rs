//! The Linux watchdog ioctls (include/uapi/linux/watchdog.h).

use std::fs::File;
use std::os::fd::AsRawFd;

/// `struct watchdog_info`.
#[repr(C)]
pub(crate) struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

const WDIOF_SETTIMEOUT: u32 = 0x0080;
const WDIOF_MAGICCLOSE: u32 = 0x0100;

nix::ioctl_read!(wdioc_getsupport, b'W', 0, WatchdogInfo);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);

/// What the driver says it can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Support {
    pub settimeout: bool,
    pub magicclose: bool,
    pub identity: String,
}

// The three ioctls below take a pointer to a value we own for the duration of the call.
#[allow(unsafe_code)]
pub(crate) fn support(file: &File) -> std::io::Result<Support> {
    let mut info = WatchdogInfo {
        options: 0,
        firmware_version: 0,
        identity: [0; 32],
    };
    // SAFETY: `info` is a valid, writable `struct watchdog_info` for the kernel to fill.
    unsafe { wdioc_getsupport(file.as_raw_fd(), &mut info) }?;
    let end = info.identity.iter().position(|b| *b == 0).unwrap_or(32);
    Ok(Support {
        settimeout: info.options & WDIOF_SETTIMEOUT != 0,
        magicclose: info.options & WDIOF_MAGICCLOSE != 0,
        identity: String::from_utf8_lossy(&info.identity[..end]).into_owned(),
    })
}

#[allow(unsafe_code)]
pub(crate) fn set_timeout(file: &File, seconds: u32) -> std::io::Result<()> {
    let mut value = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    // SAFETY: `value` is a valid, writable int (the kernel writes back the timeout it set).
    unsafe { wdioc_settimeout(file.as_raw_fd(), &mut value) }?;
    Ok(())
}

#[allow(unsafe_code)]
pub(crate) fn timeout(file: &File) -> std::io::Result<u32> {
    let mut value: libc::c_int = 0;
    // SAFETY: `value` is a valid, writable int for the kernel to fill.
    unsafe { wdioc_gettimeout(file.as_raw_fd(), &mut value) }?;
    Ok(u32::try_from(value).unwrap_or(0))
}
