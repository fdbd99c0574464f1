//! The VRRP machine, one event at a time: every row of the transition table, the RFC's timer
//! arithmetic, trust (vouching, readiness, nopreempt), and a two-node simulation.

use super::*;

const OWN: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 21);
const LOWER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 20);
const HIGHER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 22);
const VIP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 100);

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn params(priority: u8) -> VrrpParams {
    VrrpParams::new("eth0", 51, priority, VIP, OWN)
}

fn advert_from(src: Ipv4Addr, priority: u8, interval_cs: u16) -> Event {
    vouched(src, priority, interval_cs, Vouch::Plain)
}

fn vouched(src: Ipv4Addr, priority: u8, interval_cs: u16, vouch: Vouch) -> Event {
    Event::AdvertReceived {
        src,
        packet: Advert { vrid: 51, priority, max_advert_int_cs: interval_cs, addresses: vec![VIP] },
        vouch,
    }
}

fn advert(priority: u8, interval_cs: u16) -> Event {
    advert_from(HIGHER, priority, interval_cs)
}

/// A machine started at t = 0 with `p`.
fn backup_with(p: VrrpParams) -> Vrrp {
    let mut m = Vrrp::new(p);
    let actions = m.handle(Event::Startup, Duration::ZERO);
    assert_eq!(actions, vec![Action::StateChanged { from: VrrpState::Initialize, to: VrrpState::Backup }]);
    m
}

fn backup(priority: u8) -> Vrrp {
    backup_with(params(priority))
}

/// A machine that became master at its first down-timer expiry.
fn master_with(p: VrrpParams) -> (Vrrp, Duration) {
    let mut m = backup_with(p);
    let at = m.next_deadline().expect("a backup has a down timer");
    let actions = m.handle(Event::TimerExpired, at);
    assert_eq!(m.state(), VrrpState::Master, "must be master after the down timer: {actions:?}");
    (m, at)
}

fn master(priority: u8) -> (Vrrp, Duration) {
    master_with(params(priority))
}

fn to_master(from: VrrpState, priority: u8, burst: u8) -> Vec<Action> {
    vec![
        Action::StateChanged { from, to: VrrpState::Master },
        Action::SendAdvert { priority },
        Action::AddVip,
        Action::SendGarp { count: burst },
    ]
}

#[test]
fn skew_and_master_down_interval_follow_rfc_9568() {
    // (priority, Master_Adver_Interval, Skew_Time, Master_Down_Interval), worked out by hand:
    // skew = (256 - p) / 256 × interval.
    let table = [
        (100u8, secs(1), us(609_375), us(3_609_375)),
        (150, secs(1), us(414_062) + Duration::from_nanos(500), us(3_414_062) + Duration::from_nanos(500)),
        (254, secs(1), us(7_812) + Duration::from_nanos(500), us(3_007_812) + Duration::from_nanos(500)),
        (255, secs(1), us(3_906) + Duration::from_nanos(250), us(3_003_906) + Duration::from_nanos(250)),
        (100, Duration::from_millis(100), us(60_937) + Duration::from_nanos(500), us(360_937) + Duration::from_nanos(500)),
        (1, Duration::from_millis(500), us(498_046) + Duration::from_nanos(875), us(1_998_046) + Duration::from_nanos(875)),
    ];
    for (p, interval, skew, down) in table {
        assert_eq!(skew_time(p, interval), skew, "skew for priority {p} at {interval:?}");
        assert_eq!(master_down_interval(p, interval), down, "down interval for priority {p} at {interval:?}");
    }
}

#[test]
fn params_validation_names_the_bad_field() {
    assert_eq!(params(100).validate(), Ok(()));
    let bad = [
        (VrrpParams { vrid: 0, ..params(100) }, ParamsError::Vrid),
        (VrrpParams { priority: 0, ..params(100) }, ParamsError::Priority),
        (VrrpParams { advert_interval_cs: 0, ..params(100) }, ParamsError::AdvertInterval { advert_interval_cs: 0 }),
        (
            VrrpParams { advert_interval_cs: 4096, ..params(100) },
            ParamsError::AdvertInterval { advert_interval_cs: 4096 },
        ),
        (VrrpParams { vip_prefix_len: 33, ..params(100) }, ParamsError::PrefixLen { prefix_len: 33 }),
        (
            VrrpParams { advert_interval_cs: 100, max_advert_interval_cs: 50, ..params(100) },
            ParamsError::MaxAdvertInterval { advert_interval_cs: 100, max_advert_interval_cs: 50 },
        ),
        (VrrpParams { vip: OWN, ..params(100) }, ParamsError::VipIsOwnAddress { vip: OWN }),
        (VrrpParams { interface: String::new(), ..params(100) }, ParamsError::Interface),
    ];
    for (p, want) in bad {
        assert_eq!(p.validate(), Err(want), "params {p:?}");
    }
}

#[test]
fn initialize_goes_master_for_the_address_owner() {
    let mut m = Vrrp::new(params(255));
    let actions = m.handle(Event::Startup, secs(7));
    assert_eq!(actions, to_master(VrrpState::Initialize, 255, 5));
    assert_eq!(m.state(), VrrpState::Master);
    assert_eq!(m.next_deadline(), Some(secs(8)), "advert timer = now + advert interval");
    assert_eq!(m.master_address(), Some(OWN));
}

#[test]
fn initialize_goes_backup_with_master_down_timer() {
    let mut m = Vrrp::new(params(100));
    assert_eq!(m.next_deadline(), None, "no timer before startup");
    let actions = m.handle(Event::Startup, secs(7));
    assert_eq!(actions, vec![Action::StateChanged { from: VrrpState::Initialize, to: VrrpState::Backup }]);
    assert_eq!(m.state(), VrrpState::Backup);
    assert_eq!(m.next_deadline(), Some(secs(7) + us(3_609_375)));
    assert_eq!(m.master_address(), None);
}

#[test]
fn initialize_ignores_everything_but_startup() {
    let mut m = Vrrp::new(params(100));
    for event in [Event::TimerExpired, Event::Shutdown, advert(200, 100)] {
        assert_eq!(m.handle(event.clone(), secs(1)), vec![], "{event:?} in Initialize");
        assert_eq!(m.state(), VrrpState::Initialize);
    }
}

#[test]
fn backup_becomes_master_when_the_down_timer_fires() {
    let mut m = backup(100);
    let deadline = us(3_609_375);
    assert_eq!(m.handle(Event::TimerExpired, deadline - Duration::from_nanos(1)), vec![], "early wake-up");
    assert_eq!(m.state(), VrrpState::Backup);
    assert_eq!(m.handle(Event::TimerExpired, deadline), to_master(VrrpState::Backup, 100, 5));
    assert_eq!(m.next_deadline(), Some(deadline + secs(1)));
}

#[test]
fn backup_learns_the_masters_interval_for_its_timer() {
    let mut m = backup(100);
    // Master at priority 200 advertises every 50 cs: down = 1.5 s + 156/256 × 0.5 s.
    assert_eq!(m.handle(advert(200, 50), secs(1)), vec![]);
    assert_eq!(m.master_adver_interval(), Duration::from_millis(500));
    assert_eq!(m.next_deadline(), Some(secs(1) + us(1_804_687) + Duration::from_nanos(500)));
    assert_eq!(m.master_address(), Some(HIGHER));
    // A later advert at 2 s moves the timer again.
    assert_eq!(m.handle(advert(200, 200), secs(2)), vec![]);
    assert_eq!(m.next_deadline(), Some(secs(2) + secs(6) + us(1_218_750)));
}

#[test]
fn backup_accepts_equal_priority_master() {
    let mut m = backup(100);
    assert_eq!(m.handle(advert_from(LOWER, 100, 100), secs(1)), vec![]);
    assert_eq!(m.next_deadline(), Some(secs(1) + us(3_609_375)), "equal priority resets the timer");
}

#[test]
fn higher_priority_backup_preempts_a_lower_master() {
    let mut m = backup(150);
    let startup_deadline = m.next_deadline();
    assert_eq!(m.handle(advert(100, 100), secs(1)), vec![]);
    assert_eq!(m.next_deadline(), startup_deadline, "a lower-priority advert must not reset the timer");
    assert_eq!(m.handle(advert(100, 100), secs(2)), vec![]);
    assert_eq!(m.handle(advert(100, 100), secs(3)), vec![]);
    let at = startup_deadline.expect("down timer");
    assert_eq!(at, us(3_414_062) + Duration::from_nanos(500));
    assert_eq!(m.handle(Event::TimerExpired, at), to_master(VrrpState::Backup, 150, 5));
}

#[test]
fn preempt_delay_defers_preemption_then_preempts() {
    let mut m = backup_with(VrrpParams { preempt_delay: Some(secs(5)), ..params(150) });
    for t in 1..=4 {
        assert_eq!(m.handle(advert(100, 100), secs(t)), vec![], "advert at {t} s");
        assert_eq!(m.next_deadline(), Some(secs(t) + us(3_414_062) + Duration::from_nanos(500)),
            "within the delay the lower master's advert at {t} s resets the timer");
    }
    // From 5 s on (since + delay) the lower master's adverts are discarded.
    assert_eq!(m.handle(advert(100, 100), secs(5)), vec![]);
    let at = secs(4) + us(3_414_062) + Duration::from_nanos(500);
    assert_eq!(m.next_deadline(), Some(at), "after the delay the timer is no longer reset");
    assert_eq!(m.handle(advert(100, 100), secs(6)), vec![]);
    assert_eq!(m.handle(Event::TimerExpired, at), to_master(VrrpState::Backup, 150, 5));
}

#[test]
fn no_preemption_when_preempt_is_off() {
    let mut m = backup_with(VrrpParams { preempt: false, ..params(150) });
    for t in 1..=20 {
        assert_eq!(m.handle(advert(100, 100), secs(t)), vec![]);
        let deadline = m.next_deadline().expect("down timer");
        assert!(deadline > secs(t + 1), "timer keeps moving at {t} s");
        assert_eq!(m.handle(Event::TimerExpired, secs(t) + Duration::from_millis(999)), vec![]);
    }
    assert_eq!(m.state(), VrrpState::Backup, "preempt=false must never take over from a live master");
}

#[test]
fn priority_zero_in_backup_sets_the_timer_to_skew_time() {
    let mut m = backup(100);
    assert_eq!(m.handle(advert(200, 100), secs(1)), vec![]);
    assert_eq!(m.handle(advert(0, 100), secs(2)), vec![]);
    assert_eq!(m.next_deadline(), Some(secs(2) + us(609_375)), "Skew_Time after priority 0");
    assert_eq!(m.peers().count(), 0, "a leaving peer is forgotten");
    assert_eq!(m.handle(Event::TimerExpired, secs(2) + us(609_375)), to_master(VrrpState::Backup, 100, 5));
}

#[test]
fn master_steps_down_for_a_higher_priority() {
    let (mut m, t) = master(100);
    let now = t + secs(1);
    assert_eq!(
        m.handle(advert(200, 50), now),
        vec![Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup }, Action::RemoveVip]
    );
    assert_eq!(m.state(), VrrpState::Backup);
    assert_eq!(m.master_adver_interval(), Duration::from_millis(500), "interval learned on step-down");
    assert_eq!(m.next_deadline(), Some(now + us(1_804_687) + Duration::from_nanos(500)));
    assert_eq!(m.master_address(), Some(HIGHER));
}

#[test]
fn master_ignores_a_lower_priority() {
    let (mut m, t) = master(100);
    let deadline = m.next_deadline();
    assert_eq!(m.handle(advert(99, 100), t + us(1)), vec![]);
    assert_eq!(m.state(), VrrpState::Master);
    assert_eq!(m.next_deadline(), deadline, "a lower advert leaves the advert timer alone");
}

#[test]
fn equal_priority_tie_goes_to_the_higher_address() {
    // We are 172.20.0.21: a peer at .22 with equal priority wins, a peer at .20 loses.
    let (mut m, t) = master(100);
    assert_eq!(m.handle(advert_from(LOWER, 100, 100), t + us(1)), vec![]);
    assert_eq!(m.state(), VrrpState::Master, "lower address loses the tie");
    assert_eq!(
        m.handle(advert_from(HIGHER, 100, 100), t + us(2)),
        vec![Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup }, Action::RemoveVip]
    );
    assert_eq!(m.state(), VrrpState::Backup, "higher address wins the tie");
}

#[test]
fn master_answers_priority_zero_with_an_advert() {
    let (mut m, t) = master(100);
    let now = t + Duration::from_millis(300);
    assert_eq!(m.handle(advert(0, 100), now), vec![Action::SendAdvert { priority: 100 }]);
    assert_eq!(m.next_deadline(), Some(now + secs(1)), "advert timer reset");
    assert_eq!(m.state(), VrrpState::Master);
}

#[test]
fn master_advertises_every_interval_and_refreshes_garp() {
    let (mut m, t) = master(100);
    for i in 1..10 {
        let now = t + secs(i);
        assert_eq!(m.next_deadline(), Some(now), "advert {i} due");
        assert_eq!(m.handle(Event::TimerExpired, now), vec![Action::SendAdvert { priority: 100 }], "tick {i}");
    }
    // At 10 s the advert and the GARP refresh are both due.
    let now = t + secs(10);
    assert_eq!(
        m.handle(Event::TimerExpired, now),
        vec![Action::SendAdvert { priority: 100 }, Action::SendGarp { count: 1 }]
    );
    assert_eq!(m.next_deadline(), Some(now + secs(1)));
}

#[test]
fn garp_refresh_and_burst_can_be_turned_off() {
    let (mut m, t) = {
        let mut m = backup_with(VrrpParams { garp_burst: 0, garp_refresh: None, ..params(100) });
        let at = m.next_deadline().expect("down timer");
        assert_eq!(
            m.handle(Event::TimerExpired, at),
            vec![
                Action::StateChanged { from: VrrpState::Backup, to: VrrpState::Master },
                Action::SendAdvert { priority: 100 },
                Action::AddVip,
            ]
        );
        (m, at)
    };
    for i in 1..=12 {
        assert_eq!(m.handle(Event::TimerExpired, t + secs(i)), vec![Action::SendAdvert { priority: 100 }]);
    }
}

#[test]
fn graceful_shutdown_of_master_drops_vip_then_sends_priority_zero() {
    let (mut m, t) = master(100);
    assert_eq!(
        m.handle(Event::Shutdown, t + secs(1)),
        vec![
            Action::StateChanged { from: VrrpState::Master, to: VrrpState::Initialize },
            Action::RemoveVip,
            Action::SendAdvert { priority: 0 },
        ]
    );
    assert_eq!(m.state(), VrrpState::Initialize);
    assert_eq!(m.next_deadline(), None);
    assert_eq!(m.advert(0).priority, 0);
}

#[test]
fn shutdown_of_backup_just_stops() {
    let mut m = backup(100);
    assert_eq!(
        m.handle(Event::Shutdown, secs(1)),
        vec![Action::StateChanged { from: VrrpState::Backup, to: VrrpState::Initialize }]
    );
    assert_eq!(m.next_deadline(), None);
    assert_eq!(m.handle(Event::Startup, secs(2)), vec![Action::StateChanged {
        from: VrrpState::Initialize,
        to: VrrpState::Backup
    }], "a stopped instance can start again");
}

#[test]
fn owner_discards_adverts_and_stays_master() {
    let mut m = Vrrp::new(params(255));
    m.handle(Event::Startup, Duration::ZERO);
    for p in [0u8, 100, 255] {
        assert_eq!(
            m.handle(advert(p, 100), secs(1)),
            vec![Action::Discarded { src: HIGHER, reason: DiscardReason::LocalIsOwner }],
            "priority {p}"
        );
    }
    assert_eq!(m.state(), VrrpState::Master);
    assert_eq!(m.handle(Event::PriorityChanged { priority: 10 }, secs(2)), vec![], "owner is not tracked");
    assert_eq!(m.priority(), 255);
}

#[test]
fn own_and_foreign_vrid_adverts_are_discarded() {
    let (mut m, t) = master(100);
    assert_eq!(
        m.handle(advert_from(OWN, 200, 100), t),
        vec![Action::Discarded { src: OWN, reason: DiscardReason::OwnAdvert }]
    );
    let foreign = Event::AdvertReceived {
        src: HIGHER,
        packet: Advert { vrid: 52, priority: 200, max_advert_int_cs: 100, addresses: vec![VIP] },
        vouch: Vouch::Plain,
    };
    assert_eq!(m.handle(foreign, t), vec![Action::Discarded { src: HIGHER, reason: DiscardReason::OtherVrid }]);
    assert_eq!(m.state(), VrrpState::Master);
    assert_eq!(m.peers().count(), 0, "discarded adverts are not peers");
}

/// lb1's view of the lab: peers lb2 (pglb) and a keepalived host, nopreempt.
fn guarded(priority: u8) -> VrrpParams {
    VrrpParams { peers: vec![HIGHER, LOWER], preempt: false, max_advert_interval_cs: 200, ..params(priority) }
}

#[test]
fn adverts_from_strangers_or_with_bad_intervals_are_discarded_in_every_state() {
    const STRANGER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 50);
    let cases = [
        ("not a peer", vouched(STRANGER, 254, 10, Vouch::Plain), STRANGER, DiscardReason::NotAPeer),
        ("interval 0", vouched(HIGHER, 254, 0, Vouch::Plain), HIGHER, DiscardReason::BadInterval),
        ("interval past the bound", vouched(HIGHER, 254, 201, Vouch::Plain), HIGHER, DiscardReason::BadInterval),
        ("interval 4095", vouched(HIGHER, 254, 4095, Vouch::Plain), HIGHER, DiscardReason::BadInterval),
        ("unconfirmed pglb peer", vouched(HIGHER, 254, 10, Vouch::Unconfirmed), HIGHER, DiscardReason::Unconfirmed),
    ];
    for (what, event, src, reason) in cases {
        let (mut m, t) = master_with(guarded(150));
        assert_eq!(m.handle(event.clone(), t + us(1)), vec![Action::Discarded { src, reason }], "master: {what}");
        assert_eq!(m.state(), VrrpState::Master, "master keeps the VIP: {what}");
        assert_eq!(m.peers().count(), 0, "a discarded advert is no peer: {what}");
        let mut b = backup_with(guarded(100));
        let deadline = b.next_deadline();
        assert_eq!(b.handle(event, secs(1)), vec![Action::Discarded { src, reason }], "backup: {what}");
        assert_eq!(b.next_deadline(), deadline, "a discarded advert does not hold the backup off: {what}");
    }
}

#[test]
fn a_confirmed_higher_advert_is_obeyed_an_unconfirmed_one_is_not() {
    let (mut m, t) = master_with(guarded(150));
    let forged = vouched(HIGHER, 254, 10, Vouch::Unconfirmed);
    for i in 1..=30 {
        m.handle(forged.clone(), t + Duration::from_millis(100 * i));
    }
    assert_eq!(m.state(), VrrpState::Master, "30 forged adverts at 254 move nothing");
    let real = vouched(HIGHER, 200, 10, Vouch::Confirmed { healthy: true });
    assert_eq!(
        m.handle(real, t + secs(4)),
        vec![Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup }, Action::RemoveVip]
    );
}

#[test]
fn an_unconfirmed_master_does_not_hold_a_backup_off() {
    // lb1 is dead; someone sends adverts with its address: lb2 takes over anyway.
    let mut b = backup_with(guarded(100));
    let at = b.next_deadline().expect("down timer");
    for i in 1..=3 {
        b.handle(vouched(HIGHER, 150, 10, Vouch::Unconfirmed), Duration::from_millis(100 * i));
    }
    assert_eq!(b.next_deadline(), Some(at), "the timer runs on");
    assert_eq!(b.handle(Event::TimerExpired, at), to_master(VrrpState::Backup, 100, 5));
}

#[test]
fn nopreempt_keeps_a_returning_higher_priority_backup_off_a_healthy_master() {
    let mut b = backup_with(guarded(150));
    let healthy = vouched(LOWER, 100, 10, Vouch::Confirmed { healthy: true });
    for i in 1..=50 {
        let now = Duration::from_millis(100 * i);
        assert_eq!(b.handle(healthy.clone(), now), vec![], "advert {i}");
        assert!(b.next_deadline().expect("timer") > now, "the timer is held off");
    }
    assert_eq!(b.state(), VrrpState::Backup, "a healthy master keeps the VIP");
    assert_eq!(b.master_address(), Some(LOWER));
    // The master's tracking loses the writer (its report says so): the priorities decide.
    let lost = vouched(LOWER, 40, 10, Vouch::Confirmed { healthy: false });
    let held = b.next_deadline().expect("timer");
    assert_eq!(b.handle(lost.clone(), secs(6)), vec![], "discarded: the timer runs out");
    assert_eq!(b.next_deadline(), Some(held));
    assert_eq!(b.handle(Event::TimerExpired, held), to_master(VrrpState::Backup, 150, 5));
    // ... a lower priority (ours lowered by tracking too, below the master's) does not.
    let mut c = backup_with(guarded(30));
    c.handle(lost.clone(), secs(1));
    assert_eq!(
        c.next_deadline(),
        Some(secs(1) + master_down_interval(30, Duration::from_millis(100))),
        "held off: the master's priority is higher"
    );
    // preempt = true keeps RFC 9568's preemption for pglb peers too.
    let mut d = backup_with(VrrpParams { preempt: true, ..guarded(150) });
    let at = d.next_deadline().expect("timer");
    d.handle(healthy, secs(1));
    assert_eq!(d.next_deadline(), Some(at), "preempt = true discards the lower master's advert");
}

#[test]
fn a_backup_that_is_not_ready_waits_and_takes_over_once_ready() {
    let mut b = backup_with(guarded(150));
    assert_eq!(b.handle(Event::Ready { ready: false }, Duration::ZERO), vec![]);
    let at = b.next_deadline().expect("down timer");
    assert_eq!(b.handle(Event::TimerExpired, at), vec![], "not ready: no takeover");
    assert_eq!(b.state(), VrrpState::Backup);
    assert_eq!(b.next_deadline(), None, "waiting for readiness, not for a timer");
    // Ready: the master must stay silent a whole down interval more (its adverts may not have
    // been believable while this instance was not ready).
    assert_eq!(b.handle(Event::Ready { ready: true }, at + secs(1)), vec![]);
    let due = b.next_deadline().expect("the down timer runs again");
    assert!(due > at + secs(1));
    assert_eq!(b.handle(Event::TimerExpired, due), to_master(VrrpState::Backup, 150, 5));
    // A master heard while waiting ends the wait.
    let mut c = backup_with(guarded(150));
    c.handle(Event::Ready { ready: false }, Duration::ZERO);
    let at = c.next_deadline().expect("down timer");
    c.handle(Event::TimerExpired, at);
    c.handle(vouched(HIGHER, 200, 10, Vouch::Confirmed { healthy: true }), at + us(1));
    assert_eq!(c.handle(Event::Ready { ready: true }, at + us(2)), vec![], "a master is heard");
    assert_eq!(c.state(), VrrpState::Backup);
}

#[test]
fn a_backup_that_becomes_ready_after_the_master_left_waits_only_skew_time() {
    // A backup just started (not ready yet) when the master stops gracefully: priority 0, then
    // readiness. No master is left to wait a Master_Down_Interval for.
    let mut b = backup_with(guarded(150));
    b.handle(vouched(HIGHER, 200, 10, Vouch::Confirmed { healthy: true }), secs(1));
    b.handle(Event::Ready { ready: false }, secs(1));
    b.handle(advert(0, 10), secs(2));
    let skew = skew_time(150, Duration::from_millis(100));
    assert_eq!(b.handle(Event::TimerExpired, secs(2) + skew), vec![], "not ready: no takeover yet");
    assert_eq!(b.handle(Event::Ready { ready: true }, secs(3)), vec![]);
    assert_eq!(b.next_deadline(), Some(secs(3) + skew), "Skew_Time, not a Master_Down_Interval");
    assert_eq!(b.handle(Event::TimerExpired, secs(3) + skew), to_master(VrrpState::Backup, 150, 5));
    // An advert after the priority 0 (a master came back) restores the full wait.
    let mut c = backup_with(guarded(150));
    c.handle(Event::Ready { ready: false }, secs(1));
    c.handle(advert(0, 10), secs(2));
    c.handle(vouched(HIGHER, 200, 10, Vouch::Confirmed { healthy: true }), secs(2) + us(1));
    c.handle(Event::Ready { ready: true }, secs(3));
    assert_eq!(c.next_deadline(), Some(secs(3) + master_down_interval(150, Duration::from_millis(100))));
}

#[test]
fn a_master_that_is_no_longer_ready_resigns() {
    let (mut m, t) = master_with(guarded(150));
    assert_eq!(
        m.handle(Event::Ready { ready: false }, t + us(1)),
        vec![
            Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup },
            Action::RemoveVip,
            Action::SendAdvert { priority: PRIORITY_LEAVING },
        ]
    );
    assert_eq!(m.state(), VrrpState::Backup);
    assert_eq!(m.handle(Event::Ready { ready: false }, t + us(2)), vec![], "once");
}

#[test]
fn tracking_lowers_master_priority_and_advertises_it() {
    let (mut m, t) = master(150);
    assert_eq!(m.handle(Event::PriorityChanged { priority: 50 }, t + us(5)), vec![Action::SendAdvert { priority: 50 }]);
    assert_eq!(m.next_deadline(), Some(t + us(5) + secs(1)));
    assert_eq!(m.handle(Event::PriorityChanged { priority: 50 }, t + us(6)), vec![], "no change, no advert");
    assert_eq!(m.handle(Event::PriorityChanged { priority: 0 }, t + us(7)), vec![Action::SendAdvert { priority: 1 }], "clamped to 1");
    assert_eq!(m.handle(Event::PriorityChanged { priority: 255 }, t + us(8)), vec![Action::SendAdvert { priority: 254 }], "clamped to 254");
    // A backup that gets tracked up does not act until the master's next advert.
    let mut b = backup(100);
    assert_eq!(b.handle(Event::PriorityChanged { priority: 120 }, secs(1)), vec![]);
    assert_eq!(b.priority(), 120);
}

#[test]
fn peers_are_tracked_with_last_heard() {
    let mut m = backup(100);
    m.handle(advert_from(HIGHER, 200, 100), secs(1));
    m.handle(advert_from(LOWER, 50, 20), secs(2));
    m.handle(advert_from(HIGHER, 200, 100), secs(3));
    let peers: Vec<_> = m.peers().collect();
    assert_eq!(
        peers,
        vec![
            (LOWER, PeerInfo { last_heard: secs(2), priority: 50, advert_interval: Duration::from_millis(200) }),
            (HIGHER, PeerInfo { last_heard: secs(3), priority: 200, advert_interval: secs(1) }),
        ]
    );
}

/// Tier 3: two machines on a virtual clock with a seeded delivery delay, a crash, a restart
/// and a graceful stop, stepping event by event with a bound.
#[test]
fn two_node_simulation_elects_one_master_through_faults() {
    struct Node {
        m: Vrrp,
        up: bool,
        holds_vip: bool,
    }
    const A: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 21);
    const B: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 22);
    let mk = |own, priority| Node {
        m: Vrrp::new(VrrpParams::new("eth0", 51, priority, VIP, own)),
        up: false,
        holds_vip: false,
    };
    let mut nodes = [mk(A, 150), mk(B, 100)];
    let mut seed: u64 = 0x5eed_1234;
    let mut jitter = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Duration::from_micros((seed >> 33) % 2_000) // 0–2 ms link delay
    };
    // In flight: (arrival, to, from, advert).
    let mut wire: Vec<(Duration, usize, usize, Advert)> = Vec::new();
    let mut now = Duration::ZERO;
    let mut both_since: Option<Duration> = None;
    let mut longest_overlap = Duration::ZERO;
    let mut log: Vec<(Duration, usize, VrrpState)> = Vec::new();

    // Scripted faults: (time, node, event); None = crash (no events, VIP stays until restart).
    let script: Vec<(Duration, usize, Option<Event>)> = vec![
        (Duration::ZERO, 1, Some(Event::Startup)),
        (Duration::from_millis(500), 0, Some(Event::Startup)),
        (secs(20), 0, None),                       // crash A
        (secs(30), 0, Some(Event::Startup)),       // A back: preempts
        (secs(45), 0, Some(Event::Shutdown)),      // graceful stop of A
    ];
    let mut script = script.into_iter().peekable();
    let end = secs(60);
    for _step in 0..100_000 {
        let next_timer = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.up)
            .filter_map(|(i, n)| n.m.next_deadline().map(|d| (d, i)))
            .min();
        let next_wire = wire.iter().map(|w| w.0).min();
        let next_script = script.peek().map(|s| s.0);
        let Some(t) = [next_timer.map(|x| x.0), next_wire, next_script].into_iter().flatten().min() else {
            break;
        };
        if t > end {
            break;
        }
        now = t;
        let mut fed: Vec<(usize, Vec<Action>)> = Vec::new();
        if next_script == Some(t) {
            let (_, i, ev) = script.next().expect("peeked");
            match ev {
                None => {
                    nodes[i].up = false;
                    nodes[i].m = Vrrp::new(nodes[i].m.params().clone());
                }
                Some(ev) => {
                    if ev == Event::Startup {
                        nodes[i].up = true;
                        // A restarted runner removes a stale VIP before starting.
                        nodes[i].holds_vip = false;
                    }
                    let actions = nodes[i].m.handle(ev.clone(), now);
                    if ev == Event::Shutdown {
                        nodes[i].up = false;
                    }
                    fed.push((i, actions));
                }
            }
        } else if next_wire == Some(t) {
            let pos = wire.iter().position(|w| w.0 == t).expect("due packet");
            let (_, to, from, advert) = wire.remove(pos);
            if nodes[to].up {
                let src = nodes[from].m.params().own_address;
                fed.push((to, nodes[to].m.handle(Event::AdvertReceived { src, packet: advert, vouch: Vouch::Plain }, now)));
            }
        } else if let Some((_, i)) = next_timer {
            fed.push((i, nodes[i].m.handle(Event::TimerExpired, now)));
        }
        for (i, actions) in fed {
            for a in actions {
                match a {
                    Action::SendAdvert { priority } => {
                        let advert = nodes[i].m.advert(priority);
                        wire.push((now + jitter(), 1 - i, i, advert));
                    }
                    Action::AddVip => nodes[i].holds_vip = true,
                    Action::RemoveVip => nodes[i].holds_vip = false,
                    Action::StateChanged { to, .. } => log.push((now, i, to)),
                    Action::SendGarp { .. } | Action::Discarded { .. } => {}
                }
            }
        }
        if nodes[0].holds_vip && nodes[1].holds_vip && nodes[0].up && nodes[1].up {
            let since = *both_since.get_or_insert(now);
            longest_overlap = longest_overlap.max(now - since);
        } else {
            both_since = None;
        }
    }
    assert!(now >= secs(59), "simulation must run to the end, stopped at {now:?}");
    let master_at = |t: Duration| {
        let mut state = [VrrpState::Initialize; 2];
        for (when, i, to) in &log {
            if *when <= t {
                state[*i] = *to;
            }
        }
        state
    };
    assert_eq!(master_at(secs(10)), [VrrpState::Master, VrrpState::Backup], "A (150) wins the election");
    assert_eq!(master_at(secs(25))[1], VrrpState::Master, "B takes over after A crashes");
    let takeover = log
        .iter()
        .find(|(t, i, to)| *t > secs(20) && *i == 1 && *to == VrrpState::Master)
        .expect("B takeover")
        .0;
    assert!(takeover - secs(20) <= us(3_609_375) + secs(1), "crash takeover within Master_Down_Interval + one interval, took {:?}", takeover - secs(20));
    assert_eq!(master_at(secs(40)), [VrrpState::Master, VrrpState::Backup], "A preempts after restart");
    let handover = log
        .iter()
        .find(|(t, i, to)| *t > secs(45) && *i == 1 && *to == VrrpState::Master)
        .expect("B takeover after graceful stop")
        .0;
    assert!(handover - secs(45) <= us(609_375) + Duration::from_millis(3), "graceful takeover after Skew_Time, took {:?}", handover - secs(45));
    assert!(longest_overlap <= secs(1), "both held the VIP for {longest_overlap:?}");
}

/// A stall: the down timer ran out while this backup stood still (the master's adverts queued
/// behind it, or unbelievable until its peer answers its fresh report). Falling to not ready
/// restarts the down timer, and so does becoming ready again a moment later: only a master silent
/// for a whole Master_Down_Interval after that is taken over.
#[test]
fn a_backup_that_stalled_waits_a_whole_down_interval_again() {
    let mut b = backup_with(guarded(150));
    let expired = b.next_deadline().expect("down timer") + secs(2);
    assert_eq!(b.handle(Event::Ready { ready: false }, expired), vec![]);
    let again = b.next_deadline().expect("the down timer runs again from the stall");
    assert!(again > expired, "{again:?} {expired:?}");
    assert_eq!(b.handle(Event::TimerExpired, expired + us(1)), vec![], "not yet due");
    assert_eq!(b.handle(Event::Ready { ready: true }, expired + us(2)), vec![], "ready, but the master may be alive");
    assert_eq!(b.state(), VrrpState::Backup);
    let due = b.next_deadline().expect("the down timer runs again from readiness");
    assert!(due > again, "{due:?} {again:?}");
    assert_eq!(b.handle(Event::TimerExpired, due), to_master(VrrpState::Backup, 150, 5), "silent for a whole interval: taken over");
}
