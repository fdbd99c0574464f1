//! Loading the XDP program, pinning its maps, and writing backends, writer and readers into them.
//!
//! Lifecycle, per instance (two load balancers may share a machine, so every pin lives under a
//! caller-given directory such as `/sys/fs/bpf/pglb/lb1`):
//!
//! - [`Dataplane::attach`] loads the embedded object, re-using the maps pinned in the directory
//!   (so existing flows, backends and the writer survive a restart) or creating and pinning them.
//!   The XDP attachment is a BPF link pinned as `<dir>/link`: on a restart the pinned link is
//!   opened and its program replaced atomically (`bpf_link_update`), so there is never a moment
//!   without the program on the interface. Native (driver) mode is tried first; generic mode is
//!   only a fallback, with a warning.
//! - [`Dataplane::set_backends`], [`Dataplane::set_writer`], [`Dataplane::set_readers`] write
//!   the control plane's decisions; [`Dataplane::counters`], [`Dataplane::flows`] read;
//!   [`Dataplane::sweep`] removes idle and closed flows.
//! - [`dump`] opens the pinned maps read-only (nothing attached) for `pglb map dump`.
//! - [`remove`] detaches (by unpinning the link) and unpins everything.
//!
//! Dropping a [`Dataplane`] leaves the program attached and the maps pinned; only [`remove`]
//! takes them away.
//!
//! The program's own log records (rare events only) are forwarded into the daemon's log by
//! `kernel_log`; the program is loaded with its log level set to the daemon's.

mod attach;
mod flood;
mod kernel_log;
mod maps;
mod reset;
mod view;

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramError, Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, LinkError, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{MAX_BACKENDS, MAX_LISTENERS, POOL_READ, POOL_WRITE, nat::in_nat_range, tcp::Timeouts};
use thiserror::Error;

// One vocabulary with the config: a listener's pool and the attach mode.
pub use crate::config::{Pool, XdpMode};
pub use self::attach::remove;
pub use self::flood::FloodMeter;
pub use self::view::{BackendView, Counters, FlowCapacity, FlowView, LeaseView, ListenerView, MapDump, ReaderSummary, SweepStats};
use self::{
    attach::{attach_program, is_veth},
    kernel_log::{KernelLog, ReplacedLog},
    maps::Maps,
};

/// The XDP program attached to the load balancer's interface.
pub const PROGRAM: &str = "pglb_xdp";
/// A trivial `XDP_PASS` program in the same object, for the peer end of a veth.
pub const PASS_PROGRAM: &str = "pglb_pass";
/// File name of the pinned XDP link inside the pin directory.
pub const LINK_PIN: &str = "link";

/// The map code of a listener's pool.
const fn pool_code(pool: Pool) -> u8 {
    match pool {
        Pool::Write => POOL_WRITE,
        Pool::Read => POOL_READ,
    }
}

/// One VIP port clients connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// TCP port on the VIP (must lie outside the NAT source-port range 20000–60992).
    pub port: u16,
    /// Where its connections go.
    pub pool: Pool,
}

/// What to attach where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneSpec {
    /// The load balancer's interface (one arm: packets leave where they came in).
    pub interface: String,
    /// Per-instance pin directory on bpffs, e.g. `/sys/fs/bpf/pglb/lb1`.
    pub pin_dir: PathBuf,
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// Listeners on the VIP.
    pub listeners: Vec<ListenerSpec>,
    /// Attach mode.
    pub xdp_mode: XdpMode,
}

/// A PostgreSQL node as the data plane sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// Stable id, `0..64`; the control plane's node index.
    pub id: u32,
    /// Address.
    pub addr: Ipv4Addr,
    /// PostgreSQL port.
    pub port: u16,
}

/// Errors of the data plane module.
#[derive(Debug, Error)]
pub enum DataplaneError {
    /// The spec has no listener.
    #[error("the data plane needs at least one listener")]
    NoListeners,
    /// More listeners than the map holds.
    #[error("{count} listeners exceed the limit of {MAX_LISTENERS}")]
    TooManyListeners {
        /// How many were given.
        count: usize,
    },
    /// A listener port is inside the NAT source-port range.
    #[error("listener port {port} is inside the NAT source-port range 20000-60992; pick another port")]
    ListenerInNatRange {
        /// The port.
        port: u16,
    },
    /// The same listener port twice.
    #[error("listener port {port} is configured twice")]
    DuplicateListener {
        /// The port.
        port: u16,
    },
    /// A backend id outside `0..MAX_BACKENDS`.
    #[error("backend id {id} is out of range (0..{MAX_BACKENDS})")]
    BackendIdOutOfRange {
        /// The id.
        id: u32,
    },
    /// A writer or reader id that `set_backends` did not configure.
    #[error("backend id {id} is not configured; call set_backends first")]
    UnknownBackend {
        /// The id.
        id: u32,
    },
    /// The pin directory could not be created.
    #[error("creating the pin directory {path}")]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded object did not load (maps or BTF).
    #[error("loading the XDP object with maps pinned under {pin_dir}")]
    Load {
        /// The pin directory.
        pin_dir: PathBuf,
        /// The cause.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program is missing from the object or is not XDP.
    #[error("program {name} is missing from the XDP object or is not an XDP program")]
    MissingProgram {
        /// The program name.
        name: &'static str,
    },
    /// The verifier or the kernel refused a program.
    #[error("loading program {name} into the kernel")]
    ProgramLoad {
        /// The program name.
        name: &'static str,
        /// The cause (contains the verifier log).
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching XDP to the interface failed in every allowed mode.
    #[error("attaching XDP to {interface}")]
    Attach {
        /// The interface.
        interface: String,
        /// The cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// The new link could not be pinned or converted.
    #[error("pinning the XDP link at {path}")]
    PinLink {
        /// The pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pinned link could not be opened.
    #[error("opening the pinned XDP link {path}")]
    OpenLink {
        /// The pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: LinkError,
    },
    /// A map is missing from the object or the pin directory.
    #[error("map {name} is missing")]
    MissingMap {
        /// The map name.
        name: &'static str,
    },
    /// A map operation failed.
    #[error("map {name}: {op}")]
    Map {
        /// The map name.
        name: &'static str,
        /// What was attempted.
        op: &'static str,
        /// The cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The Maglev table could not be built.
    #[error("building the reader table")]
    Maglev {
        /// The cause.
        #[source]
        source: lb_common::maglev::MaglevError,
    },
    /// A pin could not be removed.
    #[error("removing {path}")]
    Remove {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The raw socket for resetting stale flows could not be opened.
    #[error("opening a raw IPv4 socket to reset stale write flows (needs CAP_NET_RAW)")]
    RstSocket {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The XDP program's log (its `AYA_LOGS` ring buffer) could not be opened.
    #[error("opening the XDP program's log")]
    KernelLog {
        /// The cause.
        #[source]
        source: Box<aya_log::Error>,
    },
    /// Reading the monotonic clock failed.
    #[error("reading CLOCK_MONOTONIC")]
    Clock {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A loaded, attached data plane instance.
pub struct Dataplane {
    // Holds the loaded programs; the pinned link keeps the attachment alive without it.
    _ebpf: Ebpf,
    maps: Maps,
    pin_dir: PathBuf,
    vip: Ipv4Addr,
    /// Opened on the first stale-flow reset.
    rst_socket: Option<reset::RstSocket>,
    /// The program's log records, forwarded to the `log` crate's logger.
    log: KernelLog,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("pin_dir", &self.pin_dir).field("vip", &self.vip).finish()
    }
}

impl DataplaneSpec {
    fn validate(&self) -> Result<(), DataplaneError> {
        if self.listeners.is_empty() {
            return Err(DataplaneError::NoListeners);
        }
        if self.listeners.len() > MAX_LISTENERS as usize {
            return Err(DataplaneError::TooManyListeners { count: self.listeners.len() });
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if in_nat_range(l.port) {
                return Err(DataplaneError::ListenerInNatRange { port: l.port });
            }
            if self.listeners[..i].iter().any(|o| o.port == l.port) {
                return Err(DataplaneError::DuplicateListener { port: l.port });
            }
        }
        Ok(())
    }
}

impl Dataplane {
    /// Loads the data plane with its maps pinned under `spec.pin_dir` (re-using pinned maps),
    /// writes the listeners, and attaches XDP to `spec.interface` — or, if a link is already
    /// pinned there, atomically replaces the program behind it.
    pub fn attach(spec: &DataplaneSpec) -> Result<Self, DataplaneError> {
        spec.validate()?;
        let redirect = is_veth(&spec.interface);
        if redirect {
            tracing::info!(interface = %spec.interface, "veth: sending rewritten packets with bpf_redirect (XDP_TX frames would wait for the peer's next wake-up)");
        }
        let mut dp = Self::load_with(&spec.pin_dir, spec.vip, redirect)?;
        dp.maps.write_listeners(spec.vip, &spec.listeners.iter().map(|l| (l.port, pool_code(l.pool))).collect::<Vec<_>>())?;
        attach_program(&mut dp._ebpf, spec)?;
        dp.log.forward();
        Ok(dp)
    }

    /// Loads the object and its (pinned) maps without attaching anything. Used by `attach` and
    /// by tests that drive the program through `BPF_PROG_TEST_RUN` (see [`Dataplane::program`]).
    pub fn load(pin_dir: &Path, vip: Ipv4Addr) -> Result<Self, DataplaneError> {
        Self::load_with(pin_dir, vip, false)
    }

    /// [`Dataplane::load`], choosing how rewritten packets leave (see `TX_REDIRECT` in lb-ebpf).
    fn load_with(pin_dir: &Path, vip: Ipv4Addr, tx_redirect: bool) -> Result<Self, DataplaneError> {
        fs::create_dir_all(pin_dir).map_err(|source| DataplaneError::PinDir { path: pin_dir.to_owned(), source })?;
        let fresh = !pin_dir.join(lb_common::MAP_WRITER).exists();
        let mut loader = EbpfLoader::new();
        let tx_redirect = u32::from(tx_redirect);
        loader.override_global(TX_REDIRECT_GLOBAL, &tx_redirect, true);
        // The program writes only the records the daemon's log lets through.
        let log_level = kernel_log::program_level();
        loader.override_global(aya_log::LEVEL, &log_level, true);
        for name in lb_common::ALL_MAPS {
            loader.map_pin_path(name, pin_dir.join(name));
        }
        let mut ebpf = loader.load(crate::EBPF_OBJECT).map_err(|source| DataplaneError::Load {
            pin_dir: pin_dir.to_owned(),
            source: Box::new(source),
        })?;
        for name in [PROGRAM, PASS_PROGRAM] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or(DataplaneError::MissingProgram { name })?;
            prog.load().map_err(|source| DataplaneError::ProgramLoad { name, source: Box::new(source) })?;
        }
        let log = KernelLog::open(&mut ebpf)?;
        let mut maps = Maps::take(&mut ebpf)?;
        if fresh {
            maps.init_fresh()?;
        }
        Ok(Self { _ebpf: ebpf, maps, pin_dir: pin_dir.to_owned(), vip, rst_socket: None, log })
    }

    /// Forwards what the program logged since the last call to the `log` crate's logger now.
    /// Only needed without a tokio runtime (tests, benchmarks): `attach` inside one forwards
    /// records as they arrive. The program writes records at the `log` crate's maximum level
    /// (`log::max_level()`) when it was loaded, and none when that was `Off`.
    pub fn flush_log(&mut self) {
        self.log.flush();
    }

    /// The loaded main XDP program (for `BPF_PROG_TEST_RUN` in tests and benchmarks).
    pub fn program(&self) -> &Xdp {
        self._ebpf
            .program(PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("the object was loaded with the main XDP program")
    }

    /// The loaded trivial `XDP_PASS` program.
    pub fn pass_program(&self) -> &Xdp {
        self._ebpf
            .program(PASS_PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("the object was loaded with the pass program")
    }

    /// Writes the listeners (VIP:port → pool); entries not listed are removed. `attach` does
    /// this; tests that only `load` call it directly.
    pub fn set_listeners(&mut self, listeners: &[ListenerSpec]) -> Result<(), DataplaneError> {
        let spec = DataplaneSpec {
            interface: String::new(),
            pin_dir: self.pin_dir.clone(),
            vip: self.vip,
            listeners: listeners.to_vec(),
            xdp_mode: XdpMode::Native,
        };
        spec.validate()?;
        self.maps.write_listeners(self.vip, &listeners.iter().map(|l| (l.port, pool_code(l.pool))).collect::<Vec<_>>())
    }

    /// Replaces the backend table. Ids not listed are cleared (new flows never go there;
    /// existing flows keep their addresses). The neighbour MAC from `/proc/net/arp` is stored as
    /// a fallback for when `bpf_fib_lookup` has no neighbour entry.
    pub fn set_backends(&mut self, backends: &[BackendSpec]) -> Result<(), DataplaneError> {
        for b in backends {
            if b.id >= MAX_BACKENDS {
                return Err(DataplaneError::BackendIdOutOfRange { id: b.id });
            }
        }
        self.maps.write_backends(backends)
    }

    /// Adds backends (nodes a reload added at the end of the list): every other entry stays,
    /// those of running nodes and of removed nodes whose established flows still finish.
    pub fn add_backends(&mut self, backends: &[BackendSpec]) -> Result<(), DataplaneError> {
        if let Some(b) = backends.iter().find(|b| b.id >= MAX_BACKENDS) {
            return Err(DataplaneError::BackendIdOutOfRange { id: b.id });
        }
        self.maps.add_backends(backends)
    }

    /// Sets the writer (one map update). Write-listener flows to any other backend are reset on
    /// their next packet; `None` makes new write connections get a RST.
    pub fn set_writer(&mut self, writer: Option<u32>) -> Result<(), DataplaneError> {
        if let Some(id) = writer {
            self.maps.require_backend(id)?;
        }
        self.maps.write_writer(writer)
    }

    /// The writer the map routes to now (an earlier run's, right after attaching to pinned maps).
    pub fn writer(&self) -> Result<Option<u32>, DataplaneError> {
        self.maps.writer_id()
    }

    /// Rebuilds the reader Maglev table from `(id, weight)` pairs and swaps it in atomically.
    /// An empty list (or all weights zero) makes new read connections get a RST.
    pub fn set_readers(&mut self, readers: &[(u32, u32)]) -> Result<(), DataplaneError> {
        for &(id, _) in readers {
            self.maps.require_backend(id)?;
        }
        self.maps.write_readers(readers)
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        self.maps.counters()
    }

    /// Live flows.
    pub fn flows(&self) -> Result<Vec<FlowView>, DataplaneError> {
        self.maps.flows()
    }

    /// Removes established flows idle for `timeouts.idle_ns`, closed (RST or both FINs) flows
    /// quiet for `closed_ns`, half-open flows older than `half_open_ns`, and reverse entries
    /// whose forward entry is gone.
    pub fn sweep(&mut self, timeouts: &Timeouts) -> Result<SweepStats, DataplaneError> {
        self.maps.sweep(timeouts)
    }

    /// Half-open flows opened and handshakes completed since the maps were created (two reason
    /// counters, for [`FloodMeter`]).
    pub fn handshake_totals(&self) -> Result<(u64, u64), DataplaneError> {
        Ok((self.maps.reason_total(lb_common::reason::TX_NEW_FLOW)?, self.maps.reason_total(lb_common::reason::TX_HANDSHAKE_DONE)?))
    }

    /// Everything `dump` shows, from this instance's maps.
    pub fn dump(&self) -> Result<MapDump, DataplaneError> {
        self.maps.dump()
    }

    /// Renews the control plane's lease: valid for `lease` from now; after it runs out the
    /// data plane drops ARP for the VIP and refuses new flows, and after `grace` more it resets
    /// write flows too (see `lb_common::Lease`).
    pub fn renew_lease(&mut self, lease: Duration, grace: Duration) -> Result<(), DataplaneError> {
        let expires = maps::monotonic_ns()?.saturating_add(lease.as_nanos() as u64);
        self.maps.write_lease(self.vip, expires, grace)
    }

    /// Whether the lease is valid now.
    pub fn lease_valid(&self) -> Result<bool, DataplaneError> {
        self.maps.lease_valid()
    }

    /// Lets the lease run out now (a graceful stop, or a start that has not decided yet):
    /// established write flows go on for `grace`.
    pub fn expire_lease(&mut self, grace: Duration) -> Result<(), DataplaneError> {
        let now = maps::monotonic_ns()?;
        self.maps.write_lease(self.vip, now.max(1), grace)
    }

    /// Resets every write-port flow whose backend is not `writer` (see
    /// [`Pinned::reset_stale_write_flows`]).
    pub fn reset_stale_write_flows(&mut self, writer: Option<u32>) -> Result<usize, DataplaneError> {
        reset_stale(&mut self.maps, &mut self.rst_socket, writer)
    }
}

/// An instance's pinned maps opened without a program: the heavy reads and walks (counters,
/// flows, sweeps, stale-flow resets) run through one of these off the daemon's main loop, while
/// the [`Dataplane`] that owns the program keeps the quick writes.
pub struct Pinned {
    maps: Maps,
    rst_socket: Option<reset::RstSocket>,
}

impl Pinned {
    /// Opens the maps pinned under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Pinned { maps: Maps::open_pinned(pin_dir)?, rst_socket: None })
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        self.maps.counters()
    }

    /// Live flows.
    pub fn flows(&self) -> Result<Vec<FlowView>, DataplaneError> {
        self.maps.flows()
    }

    /// Whether the lease is valid now.
    pub fn lease_valid(&self) -> Result<bool, DataplaneError> {
        self.maps.lease_valid()
    }

    /// See [`Dataplane::sweep`].
    pub fn sweep(&mut self, timeouts: &Timeouts) -> Result<SweepStats, DataplaneError> {
        self.maps.sweep(timeouts)
    }

    /// Resets every write-port flow whose backend is not `writer`: removes it from the tables
    /// and sends its client a RST (from VIP:port, at the sequence number the client expects, or
    /// acknowledging its SYN when the backend never answered), so a client waiting for an
    /// answer from a hung or replaced writer reconnects now instead of at its own timeout.
    /// Returns how many clients were sent a RST.
    pub fn reset_stale_write_flows(&mut self, writer: Option<u32>) -> Result<usize, DataplaneError> {
        reset_stale(&mut self.maps, &mut self.rst_socket, writer)
    }
}

fn reset_stale(maps: &mut Maps, socket: &mut Option<reset::RstSocket>, writer: Option<u32>) -> Result<usize, DataplaneError> {
    let stale = maps.take_stale_write_flows(writer)?;
    if stale.is_empty() {
        return Ok(0);
    }
    if socket.is_none() {
        *socket = Some(reset::RstSocket::open().map_err(|source| DataplaneError::RstSocket { source })?);
    }
    let sock = socket.as_ref().expect("opened above");
    let mut sent = 0;
    let mut failed: Option<(usize, String)> = None;
    for (key, flow) in &stale {
        // A client past the handshake gets a RST at the sequence number it expects; one whose
        // SYN the backend never answered (an unplugged primary) gets a RST that acknowledges its
        // SYN, which aborts a connection in SYN-SENT.
        let rst = if flow.client_next_seq != 0 {
            reset::Rst::Established { seq: flow.client_next_seq }
        } else {
            reset::Rst::SynSent { ack: flow.client_syn_next }
        };
        match sock.send_rst(key, rst) {
            Ok(()) => sent += 1,
            // One line for all of them: under a SYN flood thousands of half-open flows from
            // spoofed addresses may be stale at once.
            Err(e) => {
                let (n, _) = failed.get_or_insert_with(|| (0, format!("{e} (client {})", Ipv4Addr::from(lb_common::ip_from_map(key.client_addr)))));
                *n += 1;
            }
        }
    }
    if let Some((n, first)) = failed {
        tracing::warn!(failed = n, sent, first_error = %first, "sending RSTs to stale write flows' clients failed for some");
    }
    Ok(sent)
}

/// The load-time global of the XDP object that selects `bpf_redirect` over `XDP_TX`.
const TX_REDIRECT_GLOBAL: &str = "TX_REDIRECT";

/// Opens the maps pinned under `pin_dir` read-only (nothing is loaded or attached) and collects
/// everything `pglb map dump` prints.
pub fn dump(pin_dir: &Path) -> Result<MapDump, DataplaneError> {
    Maps::open_pinned(pin_dir)?.dump()
}
