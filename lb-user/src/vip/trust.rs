//! What this instance believes of the other load balancers, sans-IO: the last authenticated,
//! fresh report of each pglb peer ([`super::report`]), and from that, what an advert from a
//! peer's address is worth ([`Vouch`], the VRRP machine's input).
//!
//! - A keepalived peer (`[vrrp] keepalived_peers`) speaks plain VRRPv3: its adverts are
//!   believed as sent ([`Vouch::Plain`]), the explicit, per-peer exception.
//! - A pglb peer's advert is believed only while that peer's latest report is fresh (received
//!   within `fresh_for`) and says it advertises that very priority ([`Vouch::Confirmed`], with
//!   the report's tracking verdict: is it healthy): a forged advert at priority 254
//!   with its address is [`Vouch::Unconfirmed`].
//! - Any other address: [`Vouch::Unconfirmed`] (the VRRP machine drops it as not a peer first).

use std::{net::Ipv4Addr, time::Duration};

use super::{report::Report, vrrp::Vouch};

/// One pglb peer's latest report and when it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub report: Report,
    pub at: Duration,
}

/// The peers and their word.
#[derive(Clone, Debug)]
pub struct PeerWords {
    pglb: Vec<(Ipv4Addr, Option<Word>)>,
    keepalived: Vec<Ipv4Addr>,
    fresh_for: Duration,
}

impl PeerWords {
    /// `fresh_for`: how long a report vouches (the master-down interval: three reports).
    pub fn new(pglb: &[Ipv4Addr], keepalived: &[Ipv4Addr], fresh_for: Duration) -> Self {
        PeerWords { pglb: pglb.iter().map(|a| (*a, None)).collect(), keepalived: keepalived.to_vec(), fresh_for }
    }

    /// A verified report from `peer`, received at `now`.
    pub fn heard(&mut self, peer: Ipv4Addr, report: Report, now: Duration) {
        if let Some((_, w)) = self.pglb.iter_mut().find(|(a, _)| *a == peer) {
            *w = Some(Word { report, at: now });
        }
    }

    /// `peer`'s latest report if it is fresh at `now`.
    pub fn fresh(&self, peer: Ipv4Addr, now: Duration) -> Option<&Report> {
        self.pglb
            .iter()
            .find(|(a, _)| *a == peer)
            .and_then(|(_, w)| w.as_ref())
            .filter(|w| now.saturating_sub(w.at) <= self.fresh_for)
            .map(|w| &w.report)
    }

    /// What an advert from `src` at `priority`, arriving at `now`, is worth.
    pub fn vouch(&self, src: Ipv4Addr, priority: u8, now: Duration) -> Vouch {
        if self.keepalived.contains(&src) {
            return Vouch::Plain;
        }
        match self.fresh(src, now) {
            Some(r) if r.priority == priority => Vouch::Confirmed { healthy: r.healthy },
            _ => Vouch::Unconfirmed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        failover::PeerReport,
        vip::{report::ReportId, vrrp::VrrpState},
    };

    const LB2: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 22);
    const KA: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 23);
    const STRANGER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 50);

    fn report(priority: u8, writer: Option<&str>) -> Report {
        Report {
            from: LB2,
            id: ReportId { boot: 1, seq: 1 },
            echo: None,
            role: VrrpState::Master,
            priority,
            healthy: writer.is_some(),
            body: PeerReport { timeline: 2, writer: writer.map(str::to_owned), maintenance: None, marks: vec![] },
        }
    }

    #[test]
    fn vouching_table() {
        let ms = Duration::from_millis;
        let mut w = PeerWords::new(&[LB2], &[KA], ms(341));
        assert_eq!(w.vouch(LB2, 100, ms(0)), Vouch::Unconfirmed, "no report yet");
        w.heard(LB2, report(100, Some("pg1")), ms(1000));
        w.heard(STRANGER, report(254, None), ms(1000));
        let cases = [
            (LB2, 100, ms(1100), Vouch::Confirmed { healthy: true }, "fresh, same priority"),
            (LB2, 254, ms(1100), Vouch::Unconfirmed, "a priority the peer does not report: forged"),
            (LB2, 100, ms(1342), Vouch::Unconfirmed, "the report is too old"),
            (KA, 254, ms(1100), Vouch::Plain, "keepalived is believed as sent"),
            (STRANGER, 254, ms(1100), Vouch::Unconfirmed, "not a peer"),
        ];
        for (src, priority, now, want, what) in cases {
            assert_eq!(w.vouch(src, priority, now), want, "{what}");
        }
        w.heard(LB2, report(40, None), ms(2000));
        assert_eq!(w.vouch(LB2, 40, ms(2001)), Vouch::Confirmed { healthy: false }, "a master that lost the writer says so");
    }
}
