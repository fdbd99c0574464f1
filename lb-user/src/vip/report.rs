//! Peer reports: every advert interval each pglb tells its `[vrrp] peers`, by UDP unicast to
//! `report_port`, its timeline floor and the writer it reaches ([`PeerReport`]). A VRRP advert
//! carries only a priority; these carry what a restarted or cut-off load balancer must not
//! miss — a promotion made without it — and what a load balancer cut from the writer must not
//! take for its death: a peer that still reaches it.
//!
//! On the wire, one ASCII line: `pglb-report 1 timeline=<u32> writer=<node name or ->`.
//! Reports from an address that is not a configured peer are dropped (the source address is
//! the only check, as for VRRP without authentication: keep the load balancers' network
//! private).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use thiserror::Error;
use tokio::net::UdpSocket;
use tracing::warn;

use crate::failover::PeerReport;

const MAGIC: &str = "pglb-report";
const VERSION: &str = "1";
/// Longer than any valid report (a node name is at most 63 bytes).
const MAX_REPORT: usize = 256;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("not a pglb report (no \"{MAGIC} {VERSION}\" prefix)")]
    NotAReport,
    #[error("malformed report field {0:?}")]
    Field(String),
    #[error("report without a timeline")]
    NoTimeline,
}

/// The report as one line.
pub fn encode(report: &PeerReport) -> String {
    format!("{MAGIC} {VERSION} timeline={} writer={}", report.timeline, report.writer.as_deref().unwrap_or("-"))
}

/// The inverse of [`encode`].
pub fn decode(text: &str) -> Result<PeerReport, ReportError> {
    let mut words = text.trim_end().split(' ');
    if words.next() != Some(MAGIC) || words.next() != Some(VERSION) {
        return Err(ReportError::NotAReport);
    }
    let mut timeline = None;
    let mut writer = None;
    for word in words {
        match word.split_once('=') {
            Some(("timeline", v)) => timeline = Some(v.parse::<u32>().map_err(|_| ReportError::Field(word.to_owned()))?),
            Some(("writer", "-")) => writer = None,
            Some(("writer", v)) if !v.is_empty() => writer = Some(v.to_owned()),
            _ => return Err(ReportError::Field(word.to_owned())),
        }
    }
    Ok(PeerReport { timeline: timeline.ok_or(ReportError::NoTimeline)?, writer })
}

/// The UDP socket reports go out of and come in on.
pub struct ReportLink {
    socket: UdpSocket,
    peers: Vec<Ipv4Addr>,
    port: u16,
}

impl ReportLink {
    /// Binds `0.0.0.0:port`.
    pub async fn bind(port: u16, peers: Vec<Ipv4Addr>) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).await?;
        Ok(ReportLink { socket, peers, port })
    }

    /// Sends `report` to every peer; a send that fails (no route while a link is down) is the
    /// peer's silence, which the receiver's machine handles: nothing to retry.
    pub fn send(&self, report: &PeerReport) {
        let line = encode(report);
        for peer in &self.peers {
            let _ = self.socket.try_send_to(line.as_bytes(), SocketAddr::V4(SocketAddrV4::new(*peer, self.port)));
        }
    }

    /// The next valid report from a configured peer.
    pub async fn recv(&self) -> (Ipv4Addr, PeerReport) {
        let mut buf = [0u8; MAX_REPORT];
        loop {
            let (len, from) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "peer report: receiving failed");
                    continue;
                }
            };
            let SocketAddr::V4(from) = from else { continue };
            if !self.peers.contains(from.ip()) {
                warn!(from = %from, "peer report from an address that is not in [vrrp] peers: dropped");
                continue;
            }
            match std::str::from_utf8(&buf[..len]).map_err(|_| ReportError::NotAReport).and_then(decode) {
                Ok(report) => return (*from.ip(), report),
                Err(e) => warn!(from = %from, error = %e, "peer report dropped"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_the_wire() {
        for report in [PeerReport { timeline: 7, writer: Some("pg2".into()) }, PeerReport { timeline: 1, writer: None }] {
            assert_eq!(decode(&encode(&report)), Ok(report));
        }
        assert_eq!(encode(&PeerReport { timeline: 3, writer: None }), "pglb-report 1 timeline=3 writer=-");
    }

    #[test]
    fn bad_reports_are_refused() {
        assert_eq!(decode("hello"), Err(ReportError::NotAReport));
        assert_eq!(decode("pglb-report 2 timeline=1 writer=-"), Err(ReportError::NotAReport));
        assert_eq!(decode("pglb-report 1 writer=pg1"), Err(ReportError::NoTimeline));
        assert_eq!(decode("pglb-report 1 timeline=x writer=-"), Err(ReportError::Field("timeline=x".into())));
        assert_eq!(decode("pglb-report 1 timeline=1 color=red"), Err(ReportError::Field("color=red".into())));
    }

    /// Two links on loopback ports: a report from a peer arrives; one from a stranger is
    /// dropped and the next valid one still comes through.
    #[tokio::test]
    async fn reports_flow_between_peers_and_strangers_are_dropped() {
        let port = 39_411;
        let a = ReportLink::bind(port, vec![Ipv4Addr::LOCALHOST]).await.expect("bind");
        let stranger = UdpSocket::bind("127.0.0.2:0").await.expect("bind stranger");
        stranger.send_to(b"pglb-report 1 timeline=9 writer=pg9", ("127.0.0.1", port)).await.expect("send");
        a.send(&PeerReport { timeline: 4, writer: Some("pg1".into()) });
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), a.recv()).await.expect("a report within 5 s");
        assert_eq!(got, (Ipv4Addr::LOCALHOST, PeerReport { timeline: 4, writer: Some("pg1".into()) }));
    }
}
