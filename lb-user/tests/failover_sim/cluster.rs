//! The PostgreSQL cluster model: WAL positions, timelines and their forks, streaming, synchronous
//! `ANY 1` acknowledgements, clients writing through the VIP, probes, pg_rewind and promotions.

use crate::*;

#[derive(Debug, Clone)]
pub struct PgNode {
    pub alive: bool,
    pub hung: bool,
    pub hung_since: Duration,
    pub in_recovery: bool,
    pub timeline: u32,
    /// Primary: current LSN. Standby: received (flushed) LSN.
    pub lsn: u64,
    pub upstream: Option<usize>,
    /// The WAL receiver is connected to `upstream`.
    pub connected: bool,
    pub repl_link: bool,
    pub lagging: bool,
    /// Bytes a lagging standby may still receive in this step.
    pub lag_budget: u64,
    pub sync_count: u32,
    pub sync_names: Vec<usize>,
}

impl PgNode {
    /// Running, answering, and not in recovery.
    pub fn running_primary(&self) -> bool {
        self.alive && !self.hung && !self.in_recovery
    }
}

impl Sim {
    // ----- the cluster model ---------------------------------------------------------------

    /// Whether a standby on timeline `tl` at `lsn` can stream from a server on `upstream_tl`.
    pub fn can_follow(&self, tl: u32, lsn: u64, upstream_tl: u32) -> bool {
        if tl == upstream_tl {
            return true;
        }
        let mut cur = upstream_tl;
        while let Some(&(parent, fork)) = self.forks.get(&cur) {
            if parent == tl {
                return lsn <= fork;
            }
            cur = parent;
        }
        false
    }

    /// The timelines from the first to `tl`, each with the LSN where this history leaves it.
    pub fn history(&self, tl: u32) -> Vec<(u32, u64)> {
        let mut h = vec![(tl, u64::MAX)];
        let mut cur = tl;
        while let Some(&(parent, fork)) = self.forks.get(&cur) {
            h.push((parent, fork));
            cur = parent;
        }
        h.reverse();
        h
    }

    /// How far the histories of timelines `a` and `b` agree (pg_rewind's divergence point).
    pub fn common_point(&self, a: u32, b: u32) -> u64 {
        let (ha, hb) = (self.history(a), self.history(b));
        let mut point = 0;
        for (x, y) in ha.iter().zip(&hb) {
            if x.0 != y.0 {
                break;
            }
            point = x.1.min(y.1);
            if x.1 != y.1 {
                break;
            }
        }
        point
    }

    pub fn replicate(&mut self) {
        for _pass in 0..2 {
            for s in 0..NODES {
                let n = self.nodes[s].clone();
                if !n.alive || n.hung || !n.in_recovery {
                    continue;
                }
                let Some(u) = n.upstream else {
                    self.nodes[s].connected = false;
                    continue;
                };
                let up = self.nodes[u].clone();
                if !up.alive || !n.repl_link || !up.repl_link || u == s {
                    self.nodes[s].connected = false;
                    continue;
                }
                if up.hung {
                    // TCP stays up; the receiver notices only after wal_receiver_timeout.
                    self.nodes[s].connected = n.connected && self.now < up.hung_since + WAL_RECEIVER_TIMEOUT;
                    continue;
                }
                if !self.can_follow(n.timeline, n.lsn, up.timeline) {
                    self.nodes[s].connected = false;
                    continue;
                }
                let node = &mut self.nodes[s];
                node.timeline = up.timeline;
                node.connected = true;
                if up.lsn > node.lsn {
                    if node.lagging {
                        let got = node.lag_budget.min(up.lsn - node.lsn);
                        node.lsn += got;
                        node.lag_budget -= got;
                    } else {
                        node.lsn = up.lsn;
                    }
                }
            }
        }
    }

    pub fn lb_reaches(&self, lb: usize, n: usize) -> bool {
        self.nodes[n].alive && self.lbs[lb].reach[n]
    }

    /// The running primary on the highest timeline, if exactly one.
    pub fn top_primary(&self) -> Option<usize> {
        let top = (0..NODES).filter(|&n| self.nodes[n].running_primary()).map(|n| self.nodes[n].timeline).max()?;
        let on_top: Vec<usize> =
            (0..NODES).filter(|&n| self.nodes[n].running_primary() && self.nodes[n].timeline == top).collect();
        (on_top.len() == 1).then(|| on_top[0])
    }

    pub fn client_write(&mut self) {
        let mut written = Vec::new();
        for lb in self.vip_holders() {
            let Some(w) = self.lbs[lb].routed else { continue };
            let size = 1 + self.rng.below(60_000);
            if written.contains(&w) || !self.lb_reaches(lb, w) {
                continue;
            }
            let n = &mut self.nodes[w];
            if !n.hung && !n.in_recovery {
                n.lsn += size;
                written.push(w);
            }
        }
    }

    /// Commits on a routed writer are acknowledged once `ANY k` of its listed standbys have
    /// them. Only writers routed by a VIP holder count: clients reach nothing else.
    pub fn update_acks(&mut self) {
        let mut writers: Vec<usize> = self.vip_holders().iter().filter_map(|&lb| self.lbs[lb].routed).collect();
        writers.dedup();
        for w in writers {
            let n = &self.nodes[w];
            if !n.alive || n.hung || n.in_recovery {
                continue;
            }
            let mut have: Vec<u64> = n
                .sync_names
                .iter()
                .filter(|&&s| s != w)
                .map(|&s| &self.nodes[s])
                .filter(|s| s.alive && !s.hung && s.in_recovery && s.connected && s.upstream == Some(w))
                .map(|s| s.lsn.min(n.lsn))
                .collect();
            have.sort_unstable_by(|a, b| b.cmp(a));
            let k = n.sync_count as usize;
            let acked = if k == 0 { Some(n.lsn) } else { have.get(k - 1).copied() };
            if let Some(a) = acked {
                let e = self.acked.entry(n.timeline).or_insert(0);
                *e = (*e).max(a);
            }
        }
    }

    pub fn status(&mut self, lb: usize, n: usize) -> Result<NodeStatus, ProbeFailure> {
        if let Some(f) = self.lbs[lb].blips[n].pop() {
            return Err(f);
        }
        let x = &self.nodes[n];
        if !self.lb_reaches(lb, n) {
            return Err(ProbeFailure::Unreachable("connection refused".into()));
        }
        if x.hung {
            return Err(ProbeFailure::Timeout);
        }
        Ok(NodeStatus {
            in_recovery: x.in_recovery,
            timeline: x.timeline,
            current_lsn: (!x.in_recovery).then_some(x.lsn),
            receive_lsn: x.in_recovery.then_some(x.lsn),
            replay_lsn: Some(x.lsn),
            replay_lag: x.in_recovery.then_some(Duration::ZERO),
            wal_receiver: (x.in_recovery && x.connected).then(|| WalReceiver {
                status: "streaming".into(),
                sender_host: x.upstream.map(|u| host(u).to_string()),
                sender_port: Some(5432),
            }),
        })
    }

    /// PostgreSQL starts again on its data directory: a primary comes back as a primary on its
    /// own timeline (a stale one if a newer timeline exists), a standby as a standby.
    pub fn restart_node(&mut self, n: usize) {
        if self.nodes[n].alive {
            return;
        }
        self.nodes[n].alive = true;
        let x = &self.nodes[n];
        if !x.in_recovery && x.timeline < self.max_tl {
            self.coverage.stale_primary_returns += 1;
            if self.lbs.iter().any(|l| !l.running()) {
                self.coverage.stale_while_lb_down += 1;
            }
        }
    }

    pub fn heal_all(&mut self) {
        self.armed.clear();
        self.report_lost = false;
        self.lb_link = true;
        self.forgeries.clear();
        let now = self.now;
        for l in &mut self.lbs {
            l.reach = vec![true; NODES];
            l.flapping = vec![false; NODES];
            l.blips = vec![Vec::new(); NODES];
            l.restart_at = None;
            l.disk.fails_until = l.disk.fails_until.min(now);
        }
        self.peers_alive.iter_mut().for_each(|p| *p = true);
        for n in 0..NODES {
            self.restart_node(n);
            let x = &mut self.nodes[n];
            x.hung = false;
            x.repl_link = true;
            x.lagging = false;
        }
        for lb in 0..self.lbs.len() {
            self.resume(lb);
            self.restart_daemon(lb);
        }
        // A second primary on a shared timeline (a tainted fault) needs `pglb node rejoin`:
        // the operator keeps the routed one (or the first).
        for a in 0..NODES {
            for b in a + 1..NODES {
                let (x, y) = (&self.nodes[a], &self.nodes[b]);
                if x.running_primary() && y.running_primary() && x.timeline == y.timeline {
                    let (keep, victim) = if self.vip_route() == Some(b) { (b, a) } else { (a, b) };
                    self.note(format!("the operator rejoins pg{} onto pg{}", victim + 1, keep + 1));
                    self.operator_rejoin(victim, keep);
                }
            }
        }
    }

    /// `pglb node rejoin`: pg_rewind of `n` onto `onto`, a start as its standby, and the fence
    /// lifted on every load balancer.
    pub fn operator_rejoin(&mut self, n: usize, onto: usize) {
        self.rewind(n, onto);
        // The operator's word: `onto` is the primary (whichever node a load balancer took for
        // the writer meanwhile).
        for l in &mut self.lbs {
            l.retired.remove(&onto);
        }
        for lb in 0..self.lbs.len() {
            self.input(lb, Input::Admin(AdminCommand::Rejoined { node: n }));
        }
    }

    /// pg_rewind of `n` onto the history of `primary`, then a start as its standby.
    pub fn rewind(&mut self, n: usize, primary: usize) {
        let wt = self.nodes[primary].timeline;
        let keep = self.common_point(self.nodes[n].timeline, wt);
        let x = &mut self.nodes[n];
        x.alive = true;
        x.hung = false;
        x.in_recovery = true;
        x.timeline = wt;
        x.lsn = x.lsn.min(keep);
        x.upstream = Some(primary);
        x.connected = false;
        for l in &mut self.lbs {
            l.retired.remove(&n);
        }
    }

    pub fn promote_model(&mut self, n: usize, by_pglb: bool) {
        self.max_tl += 1;
        let tl = self.max_tl;
        let parent = self.nodes[n].timeline;
        let x = &mut self.nodes[n];
        self.forks.insert(tl, (x.timeline, x.lsn));
        x.timeline = tl;
        x.in_recovery = false;
        x.upstream = None;
        x.connected = false;
        x.sync_count = 1;
        x.sync_names = (0..NODES).collect();
        for l in &mut self.lbs {
            l.retired.remove(&n);
        }
        if by_pglb {
            let children = self.pglb_children.entry(parent).or_default();
            children.push(tl);
            if children.len() > 1 {
                let children = children.clone();
                self.fail(&format!("split brain: timeline {parent} has two children promoted by pglb: {children:?}"));
            }
        }
    }
}
