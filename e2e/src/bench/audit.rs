//! Counting API requests from the apiserver's audit log (JSON lines, Metadata level).
//! A request is counted once, at its RequestReceived event, if that falls inside the
//! window: a watch opened in the window counts once however long it stays open.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Requests {
    pub total: u64,
    /// "verb resource[/subresource]" → count.
    pub by_kind: BTreeMap<String, u64>,
}

/// Requests of each user received in [from, to).
pub fn count(log: &Path, from: Timestamp, to: Timestamp) -> Result<BTreeMap<String, Requests>> {
    let text = std::fs::read_to_string(log).with_context(|| format!("read {}", log.display()))?;
    Ok(count_text(&text, from, to))
}

fn count_text(text: &str, from: Timestamp, to: Timestamp) -> BTreeMap<String, Requests> {
    let mut out: BTreeMap<String, Requests> = BTreeMap::new();
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if ev["stage"] != "RequestReceived" {
            continue;
        }
        let Some(at) = ev["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if at < from || at >= to {
            continue;
        }
        let user = ev["user"]["username"].as_str().unwrap_or("?").to_string();
        let o = &ev["objectRef"];
        let mut kind = format!(
            "{} {}",
            ev["verb"].as_str().unwrap_or("?"),
            o["resource"]
                .as_str()
                .or_else(|| ev["requestURI"].as_str())
                .unwrap_or("?")
        );
        if let Some(sub) = o["subresource"].as_str() {
            kind = format!("{kind}/{sub}");
        }
        let r = out.entry(user).or_default();
        r.total += 1;
        *r.by_kind.entry(kind).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_once_inside_the_window() {
        let ev = |stage: &str, at: &str, verb: &str, res: &str| {
            format!(
                r#"{{"stage":"{stage}","requestReceivedTimestamp":"{at}","verb":"{verb}","user":{{"username":"system:node:a"}},"objectRef":{{"resource":"{res}","subresource":"status"}}}}"#
            )
        };
        let text = [
            ev(
                "RequestReceived",
                "2026-01-01T00:00:10.5Z",
                "patch",
                "nodes",
            ),
            ev(
                "ResponseComplete",
                "2026-01-01T00:00:10.5Z",
                "patch",
                "nodes",
            ),
            ev("RequestReceived", "2026-01-01T00:00:05Z", "patch", "nodes"),
            ev("RequestReceived", "2026-01-01T00:01:10Z", "get", "pods"),
        ]
        .join("\n");
        let from: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let to: Timestamp = "2026-01-01T00:01:10Z".parse().unwrap();
        let c = count_text(&text, from, to);
        assert_eq!(c["system:node:a"].total, 1);
        assert_eq!(c["system:node:a"].by_kind["patch nodes/status"], 1);
    }
}
