//! What a user sees of the volume test's pods (logs, events, container states), and
//! the report that runs every check and says which passed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::kubectl::Kubectl;
use crate::wait;

/// Outcomes of the checks, kept so every check runs and is reported.
pub(super) struct Checks {
    pub(super) started: Instant,
    pub(super) results: Vec<(String, Option<String>)>,
}

impl Checks {
    /// Runs one check and prints PASS or FAIL at once.
    pub(super) fn run(&mut self, name: &str, check: impl FnOnce() -> Result<()>) {
        let failure = check().err().map(|e| format!("{e:#}"));
        let at = self.started.elapsed().as_secs();
        match &failure {
            None => println!("volumes: [{at:>3} s] PASS {name}"),
            Some(e) => println!("volumes: [{at:>3} s] FAIL {name}: {e}"),
        }
        self.results.push((name.to_string(), failure));
    }

    pub(super) fn finish(self) -> Result<()> {
        let failed: Vec<String> = self
            .results
            .iter()
            .filter_map(|(name, f)| f.as_ref().map(|e| format!("- {name}: {e}")))
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        bail!(
            "{} of {} volume checks failed:\n{}",
            failed.len(),
            self.results.len(),
            failed.join("\n")
        )
    }
}

pub(super) fn remaining(deadline: Instant) -> Duration {
    // At least a few seconds: a late check still gets a look.
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(5))
}

pub(super) fn logs(k: &Kubectl, pod: &str, container: &str) -> Result<String> {
    k.run(&["logs", pod, "-c", container])
}

/// The pod's events as "Type Reason: message" lines.
pub(super) fn events(k: &Kubectl, pod: &str) -> Result<Vec<String>> {
    let list = k.get_json(&[
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
    ])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} {}: {}",
                e["type"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect())
}

/// What a user would look at when a pod misbehaves: phase, container states, events.
pub(super) fn pod_story(k: &Kubectl, pod: &str) -> String {
    let mut out = String::new();
    match k.get_json(&["pod", pod]) {
        Ok(p) => {
            out += &format!("pod {pod}: phase {}\n", p["status"]["phase"]);
            for key in ["initContainerStatuses", "containerStatuses"] {
                for s in p["status"][key].as_array().into_iter().flatten() {
                    out += &format!(
                        "  {} restarts={} state={}\n",
                        s["name"].as_str().unwrap_or(""),
                        s["restartCount"],
                        s["state"]
                    );
                }
            }
        }
        Err(e) => out += &format!("pod {pod}: {e:#}\n"),
    }
    match events(k, pod) {
        Ok(ev) => {
            for e in ev {
                out += &format!("  event {e}\n");
            }
        }
        Err(e) => out += &format!("  events: {e:#}\n"),
    }
    out
}

pub(super) fn with_story<T>(k: &Kubectl, pod: &str, r: Result<T>) -> Result<T> {
    r.map_err(|e| {
        let story = pod_story(k, pod);
        e.context(story)
    })
}

/// Waits for the pod's "RESULT:" line and returns its log.
pub(super) fn self_check(
    k: &Kubectl,
    pod: &str,
    container: &str,
    deadline: Instant,
) -> Result<String> {
    let out = wait::until(
        &format!("{pod} to print its RESULT line"),
        remaining(deadline),
        || {
            let out = logs(k, pod, container)?;
            Ok(out.lines().any(|l| l.starts_with("RESULT:")).then_some(out))
        },
    );
    with_story(k, pod, out)
}

/// Passes on "RESULT: OK", else fails with the FAIL lines the pod printed.
pub(super) fn judge(pod: &str, out: &str) -> Result<()> {
    if out.lines().any(|l| l == "RESULT: OK") {
        return Ok(());
    }
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL ")).collect();
    bail!("{pod} saw: {}", fails.join("; "))
}

pub(super) fn log_line_appears(
    k: &Kubectl,
    pod: &str,
    line: &str,
    deadline: Instant,
) -> Result<()> {
    let r = wait::until(
        &format!("{pod} to print {line:?}"),
        remaining(deadline),
        || {
            let out = logs(k, pod, "app")?;
            Ok(out.lines().any(|l| l == line).then_some(()))
        },
    );
    with_story(k, pod, r)
}

/// The waiting reason and message of the pod's container named `container`.
pub(super) fn waiting(p: &Value, container: &str) -> (String, String) {
    let s = p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == container)
        .map(|s| s["state"]["waiting"].clone())
        .unwrap_or_default();
    (
        s["reason"].as_str().unwrap_or("").to_string(),
        s["message"].as_str().unwrap_or("").to_string(),
    )
}

pub(super) fn pod_uid(k: &Kubectl, pod: &str) -> Result<String> {
    Ok(k.get_json(&["pod", pod])?["metadata"]["uid"]
        .as_str()
        .context("pod without uid")?
        .to_string())
}
