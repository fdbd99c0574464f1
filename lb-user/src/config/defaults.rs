//! Default values: one function per key (serde needs functions), the sections that may be left
//! out as a whole, and where an instance's pins and state live unless configured.

use std::net::SocketAddr;
use std::time::Duration;

use super::{FailoverConfig, HttpConfig};

/// Where `pin_path` lives when not configured: `<this>/<instance name>`.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/pglb";
/// Where instances keep their state file unless `[instance] state_dir` says otherwise.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/pglb";

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            failover_after: failover_after(),
            up_after: up_after(),
            max_lag_on_failover_bytes: max_lag_on_failover_bytes(),
            max_read_lag_bytes: max_read_lag_bytes(),
            max_read_lag: max_read_lag(),
            promote_timeout: promote_timeout(),
            switchover_timeout: switchover_timeout(),
            demote_command: None,
            rejoin_command: None,
            rejoin_backoff: rejoin_backoff(),
            pause_alert_after: pause_alert_after(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: http_listen(),
            allow: None,
            auth: Default::default(),
            token_file: None,
            token: None,
            stats_user: None,
            stats_password_file: None,
            stats_password_env: None,
            stats_password: None,
        }
    }
}

pub fn lease() -> Duration {
    Duration::from_secs(1)
}
pub fn lease_grace() -> Duration {
    Duration::from_secs(10)
}
pub fn flow_idle_timeout() -> Duration {
    Duration::from_secs(3600)
}
pub fn half_open_timeout() -> Duration {
    Duration::from_secs(5)
}
pub fn pg_port() -> u16 {
    5432
}
pub fn priority() -> u32 {
    100
}
pub fn read_weight() -> u32 {
    100
}
pub fn dbname() -> String {
    "postgres".to_owned()
}
pub fn probe_interval() -> Duration {
    Duration::from_millis(200)
}
pub fn probe_timeout() -> Duration {
    Duration::from_millis(150)
}
pub fn failover_after() -> u32 {
    3
}
pub fn up_after() -> u32 {
    3
}
pub fn max_lag_on_failover_bytes() -> u64 {
    1 << 20
}
pub fn max_read_lag_bytes() -> u64 {
    16 << 20
}
pub fn max_read_lag() -> Duration {
    Duration::from_secs(1)
}
pub fn promote_timeout() -> Duration {
    Duration::from_secs(30)
}
pub fn pause_alert_after() -> Duration {
    Duration::from_secs(3600)
}
pub fn rejoin_backoff() -> Duration {
    Duration::from_secs(10)
}
pub fn switchover_timeout() -> Duration {
    Duration::from_secs(10)
}
pub fn synchronous_count() -> u32 {
    1
}
pub fn vrrp_priority() -> u8 {
    100
}
pub fn report_port() -> u16 {
    3002
}
pub fn advert_interval() -> Duration {
    Duration::from_millis(100)
}
pub fn preempt() -> bool {
    false
}
pub fn max_peer_advert_interval() -> Duration {
    Duration::from_secs(2)
}
pub fn track_weight() -> u8 {
    60
}
pub fn subscriber_ttl() -> Duration {
    Duration::from_secs(5)
}

pub fn http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8404))
}
pub fn hook_timeout() -> Duration {
    Duration::from_secs(10)
}
pub fn hook_max_concurrent() -> u32 {
    4
}
