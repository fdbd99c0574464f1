//! Loading the agent's `connect4` program, attaching it to a cgroup, writing its maps, and
//! closing the sockets it sent to a writer.
//!
//! The attachment is a BPF link held by this process (`bpf_link_create`, kernel ≥ 5.7; aya
//! falls back to `BPF_PROG_ATTACH` before that), so when `pglb agent` exits, however it exits
//! (`kill -9` included), the kernel detaches the program: new connects take the VIP at once.
//! A hung agent is covered by the route's own lease (`AgentRoute::expires_ns`).
//!
//! One map is pinned: `agent_rewritten` (socket cookie → the writer a connect was sent to), at
//! `<pin_path>/rewritten`. The agent closes those sockets when it stops ([`AgentProgram::destroy_rewritten`]);
//! when it was killed, the pin keeps the record, and the next agent's start or `pglb agent
//! cleanup` ([`cleanup_pinned`]) closes them with sock_diag by cookie and removes the pin.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    pin::PinError,
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError},
};
use lb_common::{
    BACKEND_F_ACTIVE, Backend, Listener, ListenerKey, MAGLEV_SIZE, MAX_BACKENDS, POOL_READ, POOL_WRITE,
    agent::{
        AGENT_REASON_COUNT, AGENT_ROUTE_KEY, AgentRewritten, AgentRoute, MAP_AGENT_BACKENDS, MAP_AGENT_LISTENERS, MAP_AGENT_MAGLEV, MAP_AGENT_REWRITTEN, MAP_AGENT_ROUTE,
        MAP_AGENT_STATS,
    },
    ip_from_map, ip_to_map, port_from_map, port_to_map,
};
use thiserror::Error;

use super::destroy::{self, DestroyError, Destroyed};
use super::channel::Route;

/// The pinned map's file name under the agent's pin path.
pub const REWRITTEN_PIN: &str = "rewritten";

/// The program's name in the object.
pub const PROGRAM: &str = "pglb_connect4";

#[derive(Debug, Error)]
pub enum AgentBpfError {
    #[error("cannot load the agent's BPF object")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the agent object has no program {PROGRAM}")]
    MissingProgram,
    #[error("the kernel refused the connect4 program (needs cgroup v2 and a kernel with BPF_CGROUP_INET4_CONNECT, ≥ 4.17)")]
    ProgramLoad(#[source] Box<ProgramError>),
    #[error("cannot open the cgroup {} (a cgroup v2 directory, e.g. under /sys/fs/cgroup)", path.display())]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot attach the connect4 program to the cgroup {}", path.display())]
    Attach {
        path: PathBuf,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("cannot {op} map {name}")]
    Map {
        name: &'static str,
        op: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("the route names reader id {id}, above the limit of {MAX_BACKENDS}")]
    ReaderId { id: u32 },
    #[error("cannot build the readers' maglev table: {source}")]
    Maglev { source: lb_common::maglev::MaglevError },
    #[error("{} is not on a bpffs mount in this mount namespace, so the agent's record of rewritten sockets cannot be there (mount bpffs at /sys/fs/bpf; `ip netns exec` hides it behind a fresh sysfs, `nsenter --net` does not)", path.display())]
    NotBpffs { path: PathBuf },
    #[error("cannot create the pin directory {} (is bpffs mounted at /sys/fs/bpf?)", path.display())]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pin the map of rewritten sockets at {} (is it on a bpffs mount?)", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<PinError>,
    },
    #[error("cannot open the pinned map of rewritten sockets {}", path.display())]
    OpenPinned {
        path: PathBuf,
        #[source]
        source: Box<MapError>,
    },
    #[error("cannot remove the pin {}", path.display())]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot close the rewritten sockets")]
    Destroy(#[source] DestroyError),
}

fn map_err(name: &'static str, op: &'static str) -> impl FnOnce(MapError) -> AgentBpfError {
    move |source| AgentBpfError::Map { name, op, source: Box::new(source) }
}

/// The loaded program and its maps.
pub struct AgentProgram {
    ebpf: Ebpf,
    /// The Maglev half that is live (the next table goes into the other).
    active: u32,
    /// The route as last written (renewals rewrite it with a new deadline).
    route: Option<AgentRoute>,
}

impl AgentProgram {
    /// Loads the object and the program (nothing attached yet).
    pub fn load() -> Result<Self, AgentBpfError> {
        let mut ebpf = EbpfLoader::new().load(crate::AGENT_OBJECT).map_err(|e| AgentBpfError::Load(Box::new(e)))?;
        let prog: &mut CgroupSockAddr = ebpf.program_mut(PROGRAM).and_then(|p| p.try_into().ok()).ok_or(AgentBpfError::MissingProgram)?;
        prog.load().map_err(|e| AgentBpfError::ProgramLoad(Box::new(e)))?;
        Ok(AgentProgram { ebpf, active: 0, route: None })
    }

    /// The VIP listeners to rewrite.
    pub fn set_listeners(&mut self, vip: Ipv4Addr, write_ports: &[u16], read_ports: &[u16]) -> Result<(), AgentBpfError> {
        let mut map: HashMap<&mut MapData, ListenerKey, Listener> =
            HashMap::try_from(self.ebpf.map_mut(MAP_AGENT_LISTENERS).expect("the object has agent_listeners")).map_err(map_err(MAP_AGENT_LISTENERS, "open"))?;
        let pools = write_ports.iter().map(|p| (*p, POOL_WRITE)).chain(read_ports.iter().map(|p| (*p, POOL_READ)));
        for (i, (port, pool)) in pools.enumerate() {
            let key = ListenerKey { vip: ip_to_map(vip.octets()), port: port_to_map(port), _pad: 0 };
            map.insert(key, Listener { pool, _pad: [0; 3], index: i as u32 }, 0).map_err(map_err(MAP_AGENT_LISTENERS, "write"))?;
        }
        Ok(())
    }

    /// Attaches the program to the cgroup v2 directory `path`.
    pub fn attach(&mut self, path: &Path) -> Result<(), AgentBpfError> {
        let cgroup = File::open(path).map_err(|source| AgentBpfError::Cgroup { path: path.to_owned(), source })?;
        let prog: &mut CgroupSockAddr = self.ebpf.program_mut(PROGRAM).and_then(|p| p.try_into().ok()).ok_or(AgentBpfError::MissingProgram)?;
        // A BPF link (kernel ≥ 5.7) always coexists with other programs on the cgroup, and
        // bpf_link_create refuses the BPF_F_ALLOW_MULTI flag: "Single" asks for no flag.
        prog.attach(&cgroup, CgroupAttachMode::Single).map_err(|e| AgentBpfError::Attach { path: path.to_owned(), source: Box::new(e) })?;
        Ok(())
    }

    /// Writes a route valid until `expires_ns` (CLOCK_MONOTONIC): reader addresses and the
    /// Maglev table into the idle half first, then the route (one hash update) that makes them
    /// live.
    pub fn apply(&mut self, route: &Route, expires_ns: u64) -> Result<(), AgentBpfError> {
        let mut readers = Vec::with_capacity(route.readers.len());
        {
            let mut backends: Array<&mut MapData, Backend> =
                Array::try_from(self.ebpf.map_mut(MAP_AGENT_BACKENDS).expect("the object has agent_backends")).map_err(map_err(MAP_AGENT_BACKENDS, "open"))?;
            for r in &route.readers {
                if r.id >= MAX_BACKENDS {
                    return Err(AgentBpfError::ReaderId { id: r.id });
                }
                let b = Backend { addr: ip_to_map(r.target.addr.ip().octets()), port: port_to_map(r.target.addr.port()), flags: BACKEND_F_ACTIVE, mac: [0; 6], _pad: [0; 2] };
                backends.set(r.id, b, 0).map_err(map_err(MAP_AGENT_BACKENDS, "write"))?;
                readers.push((r.id, r.weight.max(1)));
            }
        }
        let mut table = vec![0u32; MAGLEV_SIZE as usize];
        let placed = lb_common::maglev::build(&readers, &mut table).map_err(|source| AgentBpfError::Maglev { source })?;
        let next = 1 - self.active;
        {
            let mut maglev: Array<&mut MapData, u32> =
                Array::try_from(self.ebpf.map_mut(MAP_AGENT_MAGLEV).expect("the object has agent_maglev")).map_err(map_err(MAP_AGENT_MAGLEV, "open"))?;
            for (i, id) in table.into_iter().enumerate() {
                maglev.set(next * MAGLEV_SIZE + i as u32, id, 0).map_err(map_err(MAP_AGENT_MAGLEV, "write"))?;
            }
        }
        let (writer_addr, writer_port) = match &route.writer {
            Some(w) => (ip_to_map(w.addr.ip().octets()), port_to_map(w.addr.port())),
            None => (0, 0),
        };
        let value = AgentRoute {
            expires_ns,
            epoch_seq: route.epoch.seq,
            epoch_timeline: route.epoch.timeline,
            writer_addr,
            writer_port,
            _pad: 0,
            active: next,
            readers: placed as u32,
            _pad2: 0,
        };
        self.write_route(value)?;
        self.active = next;
        Ok(())
    }

    /// Moves the route's deadline.
    pub fn renew(&mut self, expires_ns: u64) -> Result<(), AgentBpfError> {
        match self.route {
            Some(r) => self.write_route(AgentRoute { expires_ns, ..r }),
            None => Ok(()),
        }
    }

    /// Removes the route: every connect goes to the VIP.
    pub fn clear(&mut self) -> Result<(), AgentBpfError> {
        let mut map = self.route_map()?;
        match map.remove(&AGENT_ROUTE_KEY) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(MAP_AGENT_ROUTE, "clear")(e)),
        }
        self.route = None;
        Ok(())
    }

    /// Per-reason connect counts, summed over CPUs (index: `AGENT_R_*`).
    pub fn counters(&self) -> Result<[u64; AGENT_REASON_COUNT as usize], AgentBpfError> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(MAP_AGENT_STATS).expect("the object has agent_stats")).map_err(map_err(MAP_AGENT_STATS, "open"))?;
        let mut out = [0u64; AGENT_REASON_COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(i as u32), 0).map_err(map_err(MAP_AGENT_STATS, "read"))?.iter().sum();
        }
        Ok(out)
    }

    /// Pins `agent_rewritten` at `<dir>/rewritten` (creating `dir`); returns the pin's path.
    /// A pin left there must have been cleaned up first ([`cleanup_pinned`]).
    pub fn pin_rewritten(&self, dir: &Path) -> Result<PathBuf, AgentBpfError> {
        require_bpffs(dir)?;
        std::fs::create_dir_all(dir).map_err(|source| AgentBpfError::PinDir { path: dir.to_owned(), source })?;
        let path = dir.join(REWRITTEN_PIN);
        let map = self.ebpf.map(MAP_AGENT_REWRITTEN).expect("the object has agent_rewritten");
        map.pin(&path).map_err(|source| AgentBpfError::Pin { path: path.clone(), source: Box::new(source) })?;
        Ok(path)
    }

    /// Closes every socket still connected to the writer this program sent it to.
    pub fn destroy_rewritten(&self) -> Result<Destroyed, AgentBpfError> {
        let map: HashMap<&MapData, u64, AgentRewritten> =
            HashMap::try_from(self.ebpf.map(MAP_AGENT_REWRITTEN).expect("the object has agent_rewritten")).map_err(map_err(MAP_AGENT_REWRITTEN, "open"))?;
        destroy_recorded(&map)
    }

    fn route_map(&mut self) -> Result<HashMap<&mut MapData, u32, AgentRoute>, AgentBpfError> {
        HashMap::try_from(self.ebpf.map_mut(MAP_AGENT_ROUTE).expect("the object has agent_route")).map_err(map_err(MAP_AGENT_ROUTE, "open"))
    }

    fn write_route(&mut self, value: AgentRoute) -> Result<(), AgentBpfError> {
        self.route_map()?.insert(AGENT_ROUTE_KEY, value, 0).map_err(map_err(MAP_AGENT_ROUTE, "write"))?;
        self.route = Some(value);
        Ok(())
    }
}

/// After an agent was killed: closes the sockets recorded in the map it pinned under `dir` and
/// removes the pin. `None`: nothing was pinned there (the last agent stopped cleanly, or none ran).
pub fn cleanup_pinned(dir: &Path) -> Result<Option<Destroyed>, AgentBpfError> {
    require_bpffs(dir)?;
    let path = dir.join(REWRITTEN_PIN);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(|source| AgentBpfError::OpenPinned { path: path.clone(), source: Box::new(source) })?;
    let map: HashMap<MapData, u64, AgentRewritten> =
        aya::maps::Map::from_map_data(data).and_then(HashMap::try_from).map_err(|source| AgentBpfError::OpenPinned { path: path.clone(), source: Box::new(source) })?;
    let done = destroy_recorded(&map)?;
    unpin(dir)?;
    Ok(Some(done))
}

/// Fails unless the nearest existing directory of `dir` is on bpffs: a pin looked for anywhere
/// else would be "nothing pinned" without a word.
fn require_bpffs(dir: &Path) -> Result<(), AgentBpfError> {
    use std::os::unix::ffi::OsStrExt as _;
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).map_err(|_| AgentBpfError::NotBpffs { path: dir.to_owned() })?;
    // SAFETY: an all-zero statfs is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 || st.f_type != libc::BPF_FS_MAGIC {
        return Err(AgentBpfError::NotBpffs { path: dir.to_owned() });
    }
    Ok(())
}

/// Removes the pin under `dir` (and `dir`, when that leaves it empty).
pub fn unpin(dir: &Path) -> Result<(), AgentBpfError> {
    let path = dir.join(REWRITTEN_PIN);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AgentBpfError::Unpin { path, source }),
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Closes the sockets of `map` (cookie → writer) still connected to that writer.
fn destroy_recorded<T: std::borrow::Borrow<MapData>>(map: &HashMap<T, u64, AgentRewritten>) -> Result<Destroyed, AgentBpfError> {
    let mut recorded = std::collections::HashMap::new();
    for entry in map.iter() {
        let (cookie, to) = entry.map_err(map_err(MAP_AGENT_REWRITTEN, "read"))?;
        recorded.insert(cookie, SocketAddrV4::new(Ipv4Addr::from(ip_from_map(to.addr)), port_from_map(to.port)));
    }
    if recorded.is_empty() {
        return Ok(Destroyed::default());
    }
    destroy::destroy_where(|id| recorded.get(&destroy::cookie_of(id)).is_some_and(|to| destroy::peer_of(id) == Some(*to))).map_err(AgentBpfError::Destroy)
}
