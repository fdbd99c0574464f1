//! Attaching the XDP program to the interface and pinning its link (or replacing the program
//! behind a link an earlier run pinned), and detaching and unpinning everything
//! (`pglb map remove`).

use super::*;

/// Whether `interface` (in this thread's network namespace) is a veth, by its ethtool driver
/// name. Any failure answers false (keep `XDP_TX`).
pub(super) fn is_veth(interface: &str) -> bool {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 4 * 5],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    let name = interface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return false;
    }
    let mut info = DrvInfo { cmd: ETHTOOL_GDRVINFO, driver: [0; 32], rest: [0; 32 * 4 + 12 + 4 * 5] };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: socket(2) has no memory preconditions; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points at a live ethtool_drvinfo.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req) };
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    rc == 0 && info.driver.starts_with(b"veth\0")
}

/// Attaches the program to `spec.interface` (native XDP, generic when refused) and pins the
/// link, or replaces the program behind a link pinned by an earlier run.
pub(super) fn attach_program(ebpf: &mut Ebpf, spec: &DataplaneSpec) -> Result<(), DataplaneError> {
    let link_path = spec.pin_dir.join(LINK_PIN);
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(DataplaneError::MissingProgram { name: PROGRAM })?;
    // The log of the program a restart replaces, drained once the new program is attached.
    let mut replaced_log: Option<ReplacedLog> = None;
    if link_path.exists() {
        let pinned = PinnedLink::from_pin(&link_path)
            .map_err(|source| DataplaneError::OpenLink { path: link_path.clone(), source })?;
        let fd_link = FdLink::from(pinned);
        // The old program's log, opened while the old program still lives: records it wrote
        // since the last daemon exited are forwarded once it is replaced.
        replaced_log = ReplacedLog::open(&fd_link);
        let link = XdpLink::try_from(fd_link)
            .map_err(|source| DataplaneError::OpenLink { path: link_path.clone(), source })?;
        match prog.attach_to_link(link) {
            Ok(_) => {
                tracing::info!(interface = %spec.interface, link = %link_path.display(), "replaced the XDP program behind the pinned link");
                if let Some(replaced_log) = replaced_log {
                    replaced_log.drain();
                }
                return Ok(());
            }
            Err(error) => {
                // The link is defunct (its interface went away): start over.
                tracing::warn!(%error, link = %link_path.display(), "pinned XDP link is unusable; attaching anew");
                fs::remove_file(&link_path).map_err(|source| DataplaneError::Remove { path: link_path.clone(), source })?;
            }
        }
    }
    let link_id = match spec.xdp_mode {
        XdpMode::Native => match prog.attach(&spec.interface, AyaXdpMode::Driver) {
            Ok(id) => id,
            Err(error) => {
                tracing::warn!(%error, interface = %spec.interface, "native XDP refused; falling back to generic (skb) mode, which is much slower");
                prog.attach(&spec.interface, AyaXdpMode::Skb)
                    .map_err(|source| DataplaneError::Attach { interface: spec.interface.clone(), source: Box::new(source) })?
            }
        },
        XdpMode::Generic => prog
            .attach(&spec.interface, AyaXdpMode::Skb)
            .map_err(|source| DataplaneError::Attach { interface: spec.interface.clone(), source: Box::new(source) })?,
    };
    let link = prog
        .take_link(link_id)
        .map_err(|source| DataplaneError::Attach { interface: spec.interface.clone(), source: Box::new(source) })?;
    let fd_link = FdLink::try_from(link)
        .map_err(|source| DataplaneError::PinLink { path: link_path.clone(), source: Box::new(source) })?;
    fd_link
        .pin(&link_path)
        .map_err(|source| DataplaneError::PinLink { path: link_path.clone(), source: Box::new(source) })?;
    tracing::info!(interface = %spec.interface, link = %link_path.display(), "attached XDP and pinned the link");
    if let Some(replaced_log) = replaced_log {
        replaced_log.drain();
    }
    Ok(())
}

/// Detaches and unpins everything under `pin_dir`: the XDP link (unpinning it detaches the
/// program once no process holds it), every map, then the directory if it is empty. When no
/// link is pinned but `interface` is given, any XDP program on that interface is removed with
/// `ip link set dev <interface> xdp off` (the netlink attach fallback of old kernels).
pub fn remove(pin_dir: &Path, interface: Option<&str>) -> Result<(), DataplaneError> {
    let link_path = pin_dir.join(LINK_PIN);
    if link_path.exists() {
        let pinned = PinnedLink::from_pin(&link_path)
            .map_err(|source| DataplaneError::OpenLink { path: link_path.clone(), source })?;
        let fd_link = pinned.unpin().map_err(|source| DataplaneError::Remove { path: link_path.clone(), source })?;
        drop(fd_link);
    } else if let Some(interface) = interface {
        for mode in ["xdp", "xdpgeneric"] {
            let status = std::process::Command::new("ip").args(["link", "set", "dev", interface, mode, "off"]).status();
            if let Err(error) = status {
                tracing::warn!(%error, interface, "could not run ip to detach XDP");
            }
        }
    }
    for name in lb_common::ALL_MAPS {
        let path = pin_dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DataplaneError::Remove { path, source }),
        }
    }
    match fs::remove_dir(pin_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
            tracing::warn!(dir = %pin_dir.display(), "pin directory not empty after removing pglb's pins; left in place");
            Ok(())
        }
        Err(source) => Err(DataplaneError::Remove { path: pin_dir.to_owned(), source }),
    }
}
