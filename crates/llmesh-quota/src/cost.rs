//! `llmesh cost`: spend per namespace, workload, model or provider over a
//! time window, read back from the usage stream.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use redis::aio::ConnectionLike;

use crate::usage::UsageRecord;
use crate::window::unix_ms;

/// What the rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Namespace.
    Namespace,
    /// `namespace/workload`.
    Workload,
    /// Model served.
    Model,
    /// Provider.
    Provider,
}

impl GroupBy {
    /// Parses `namespace`, `workload`, `model` or `provider`.
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "namespace" => Some(GroupBy::Namespace),
            "workload" => Some(GroupBy::Workload),
            "model" => Some(GroupBy::Model),
            "provider" => Some(GroupBy::Provider),
            _ => None,
        }
    }

    fn header(self) -> &'static str {
        match self {
            GroupBy::Namespace => "namespace",
            GroupBy::Workload => "namespace/workload",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
        }
    }

    fn key(self, r: &UsageRecord) -> String {
        match self {
            GroupBy::Namespace => r.namespace.clone(),
            GroupBy::Workload => format!("{}/{}", r.namespace, r.workload),
            GroupBy::Model => r.model.clone(),
            GroupBy::Provider => r.provider.clone(),
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostRow {
    /// The group.
    pub key: String,
    /// Requests.
    pub requests: u64,
    /// Of which answered with a status of 400 or more.
    pub errors: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// USD.
    pub cost_usd: f64,
}

/// Parses `90s`, `30m`, `24h`, `7d` (and combinations such as `1d12h`).
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: expected a number such as 24h"))?;
        let unit = rest[digits..].chars().next();
        let secs = match unit {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86_400,
            _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
        };
        total += Duration::from_secs(n * secs);
        rest = &rest[digits + 1..];
    }
    Ok(total)
}

/// Every record of `stream` written at or after `since` (by the stream's
/// entry ids, which are the Redis server's clock in ms), read in pages.
pub async fn read_records<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    since: SystemTime,
) -> redis::RedisResult<Vec<UsageRecord>> {
    let mut start = format!("{}-0", unix_ms(since));
    let mut out = Vec::new();
    loop {
        let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        let Some((last, _)) = page.last() else { break };
        // The next page starts after the last id read.
        start = format!("({last}");
        let n = page.len();
        out.extend(page.iter().map(|(_, f)| UsageRecord::from_fields(f)));
        if n < 1000 {
            break;
        }
    }
    Ok(out)
}

/// Sums records into rows, most expensive first.
pub fn aggregate(records: &[UsageRecord], by: GroupBy) -> Vec<CostRow> {
    let mut rows: BTreeMap<String, CostRow> = BTreeMap::new();
    for r in records {
        let key = by.key(r);
        let row = rows.entry(key.clone()).or_insert_with(|| CostRow {
            key,
            ..CostRow::default()
        });
        row.requests += 1;
        row.errors += u64::from(r.status >= 400);
        row.input_tokens += r.input_tokens;
        row.output_tokens += r.output_tokens;
        row.cost_usd += r.cost_usd;
    }
    let mut rows: Vec<CostRow> = rows.into_values().collect();
    rows.sort_by(|a, b| b.cost_usd.total_cmp(&a.cost_usd).then(a.key.cmp(&b.key)));
    rows
}

/// A plain-text table of `rows` with a total line.
pub fn render(rows: &[CostRow], by: GroupBy) -> String {
    let head = by.header();
    let width = rows
        .iter()
        .map(|r| r.key.len())
        .chain([head.len(), 5])
        .max()
        .unwrap_or(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{head:<width$}  {:>9}  {:>7}  {:>13}  {:>13}  {:>12}",
        "requests", "errors", "input_tokens", "output_tokens", "cost_usd"
    );
    let mut total = CostRow {
        key: "TOTAL".into(),
        ..CostRow::default()
    };
    for r in rows {
        line(&mut s, r, width);
        total.requests += r.requests;
        total.errors += r.errors;
        total.input_tokens += r.input_tokens;
        total.output_tokens += r.output_tokens;
        total.cost_usd += r.cost_usd;
    }
    line(&mut s, &total, width);
    s
}

fn line(s: &mut String, r: &CostRow, width: usize) {
    let _ = writeln!(
        s,
        "{:<width$}  {:>9}  {:>7}  {:>13}  {:>13}  {:>12.6}",
        r.key, r.requests, r.errors, r.input_tokens, r.output_tokens, r.cost_usd
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_since("24h").ok(), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_since("7d").ok(), Some(Duration::from_secs(604_800)));
        assert_eq!(
            parse_since("1d12h").ok(),
            Some(Duration::from_secs(129_600))
        );
        assert_eq!(parse_since("90s").ok(), Some(Duration::from_secs(90)));
        for bad in ["", "h", "10", "10x", "1.5h"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
