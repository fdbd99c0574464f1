//! pglb's Prometheus `/metrics` as the drills read it: fetched with curl inside a load
//! balancer's namespace (`http://127.0.0.1:8404/metrics`, `[http] listen` of the lab configs),
//! parsed into samples, summed by name and labels. A metric a check needs that the daemon does
//! not export is an error, never a zero: a check of it must not pass on a pglb that does not say.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};

use crate::{
    lab::{net::ns_cmd, topology::Host},
    sh,
};

/// Where pglb serves `/metrics` inside each load balancer's namespace (config/lab*.toml).
pub const METRICS_URL: &str = "http://127.0.0.1:8404/metrics";

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One scrape of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    samples: Vec<Sample>,
}

/// Fetches a load balancer's `/metrics` (2 s limit).
pub fn fetch(lb: &Host) -> Result<Metrics> {
    let text = sh::output(&mut ns_cmd(&lb.ns(), "curl", ["-sf", "-m", "2", METRICS_URL])).with_context(|| format!("fetching {METRICS_URL} on {}", lb.name))?;
    Metrics::parse(&text).with_context(|| format!("reading {}'s /metrics", lb.name))
}

impl Metrics {
    /// Parses the Prometheus text format (comments and blank lines skipped; label values with
    /// `\"`, `\\` and `\n` escapes).
    pub fn parse(text: &str) -> Result<Metrics> {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).with_context(|| format!("a /metrics line that does not parse: {l:?}")))
            .collect::<Result<_>>()?;
        Ok(Metrics { samples })
    }

    /// Whether any sample of `name` is exported.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// The sum of the samples of `name` whose labels include every `(key, value)` of `want`;
    /// `None` when there is none.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name && want.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v)))
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// [`Metrics::sum`], an error naming the metric when it is not exported at all. A counter
    /// that is exported but has no sample with these labels yet reads 0 (a labelled counter may
    /// appear on its first increment).
    pub fn counter(&self, name: &str, want: &[(&str, &str)]) -> Result<f64> {
        if !self.has(name) {
            bail!("pglb does not export {name} in /metrics");
        }
        Ok(self.sum(name, want).unwrap_or(0.0))
    }

    /// A gauge: exactly the value of the samples of `name` with these labels, an error when
    /// there is none.
    pub fn gauge(&self, name: &str, want: &[(&str, &str)]) -> Result<f64> {
        self.sum(name, want).with_context(|| format!("pglb does not export {name}{want:?} in /metrics"))
    }
}

fn parse_sample(line: &str) -> Result<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => bail!("no value"),
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
            match chars.peek() {
                Some((i, '}')) => {
                    end = *i + 1;
                    break;
                }
                None => bail!("unterminated labels"),
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                bail!("label {key} has no quoted value");
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => bail!("unterminated escape"),
                    },
                    Some((_, c)) => value.push(c),
                    None => bail!("unterminated label value"),
                }
            }
            labels.insert(key.trim().to_owned(), value);
        }
        &body[end..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next().context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    if name.is_empty() {
        bail!("no metric name");
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP pglb_vrrp_adverts_dropped_total VRRP adverts dropped, by reason.
# TYPE pglb_vrrp_adverts_dropped_total counter
pglb_vrrp_adverts_dropped_total{instance_name="lb1",reason="ttl"} 0
pglb_vrrp_adverts_dropped_total{instance_name="lb1",reason="not_a_peer"} 10
pglb_vrrp_adverts_dropped_total{instance_name="lb1",reason="unconfirmed"} 51
pglb_ready{instance_name="lb1"} 1
pglb_state_write_errors_total{instance_name="lb1"} 3
pglb_odd{instance_name="a \"quoted\" \\ name",x="1"} 2.5
pglb_probe_latency_seconds_bucket{instance_name="lb1",node="pg1",le="+Inf"} 7
pglb_up 1
"#;

    #[test]
    fn samples_are_summed_by_labels() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(m.sum("pglb_vrrp_adverts_dropped_total", &[]), Some(61.0));
        assert_eq!(m.sum("pglb_vrrp_adverts_dropped_total", &[("reason", "not_a_peer")]), Some(10.0));
        assert_eq!(m.counter("pglb_vrrp_adverts_dropped_total", &[("reason", "bad_interval")]).unwrap(), 0.0, "exported, no sample yet: 0");
        assert!(m.counter("pglb_peer_reports_dropped_total", &[]).is_err(), "not exported: an error, not 0");
        assert_eq!(m.gauge("pglb_ready", &[("instance_name", "lb1")]).unwrap(), 1.0);
        assert!(m.gauge("pglb_state_recorded", &[]).is_err());
        assert_eq!(m.sum("pglb_odd", &[("instance_name", "a \"quoted\" \\ name")]), Some(2.5));
        assert_eq!(m.sum("pglb_probe_latency_seconds_bucket", &[("le", "+Inf")]), Some(7.0));
        assert_eq!(m.sum("pglb_up", &[]), Some(1.0));
        assert!(m.has("pglb_up") && !m.has("pglb_down"));
    }

    #[test]
    fn bad_lines_are_errors() {
        for bad in ["pglb_x{a=\"1\"", "pglb_x{a=1} 2", "pglb_x", "pglb_x{a=\"1\"} nope", "{a=\"1\"} 3"] {
            assert!(Metrics::parse(bad).is_err(), "{bad:?} must not parse");
        }
    }
}
