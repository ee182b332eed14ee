//! critest, the cri-tools validation suite, against Gantry's CRI and against
//! containerd's CRI plugin on the same containerd in the same run. It prints both
//! results side by side and fails if any spec fails on Gantry that is not listed in
//! KNOWN_GAPS below (each entry says why), or if a listed gap starts passing (then the
//! list must shrink).

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use gantry_e2e::{network, paths, Bed, BedOptions};

/// Specs that cannot pass on this machine for any runtime.
const SKIPPED: &[&str] = &[
    // Pulls a digest of an image on a public registry: no internet here.
    "public image with digest",
];

/// Specs Gantry's CRI does not pass yet, with the reason. Keep in step with the code.
const KNOWN_GAPS: &[(&str, &str)] = &[];

#[derive(Debug, Default)]
struct Outcome {
    ran: u32,
    total: u32,
    passed: u32,
    failed: u32,
    skipped: u32,
    failures: Vec<String>,
    seconds: f64,
}

fn critest(endpoint: &str, report_dir: &Path) -> Result<(Outcome, String)> {
    let skip = SKIPPED.join("|");
    let started = std::time::Instant::now();
    // A hung spec must not hang the suite: critest gets 20 minutes per runtime.
    let mut cmd = Command::new("timeout");
    cmd.args(["--signal=KILL", "1200"])
        .arg(paths::tool("critest")?);
    if let Ok(focus) = std::env::var("GANTRY_CRITEST_FOCUS") {
        cmd.arg(format!("--ginkgo.focus={focus}"));
    }
    let out = cmd
        .arg(format!("--runtime-endpoint={endpoint}"))
        .arg(format!("--image-endpoint={endpoint}"))
        .arg(format!("--ginkgo.skip={skip}"))
        .arg("--ginkgo.no-color")
        .arg(format!("--report-dir={}", report_dir.display()))
        .output()
        .context("run critest")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut o = parse(&text);
    o.seconds = started.elapsed().as_secs_f64();
    Ok((o, text))
}

/// Reads ginkgo's summary: "Ran 80 of 85 Specs", "79 Passed | 1 Failed | 0 Pending |
/// 5 Skipped", and the "[FAIL] ..." lines of the summary.
fn parse(text: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["Ran", ran, "of", total, "Specs", ..] = words.as_slice() {
            o.ran = ran.parse().unwrap_or(0);
            o.total = total.parse().unwrap_or(0);
        }
        if line.contains(" Passed | ") {
            let number_before = |label: &str| -> u32 {
                line.split('|')
                    .find(|p| p.contains(label))
                    .and_then(|p| p.split_whitespace().rev().nth(1))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            o.passed = number_before("Passed");
            o.failed = number_before("Failed");
            o.skipped = number_before("Skipped");
        }
        if let Some(rest) = line.trim_start().strip_prefix("[FAIL] ") {
            if !o.failures.iter().any(|f| f == rest) {
                o.failures.push(rest.to_string());
            }
        }
    }
    o
}

#[test]
fn critest_on_gantry_cri_and_containerd_cri() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-critest"))?;
    // containerd's CRI plugin needs a pod network of its own.
    let ctd_conf = bed.containerd.cni_conf_dir.clone();
    network::create_node_network(&mut bed.state, "containerd-cri", &ctd_conf)?;
    let cri = bed.start_gantry_cri("gantry-cri")?;
    // Reports outlive the bed (its directory goes at teardown).
    let reports = Path::new(env!("CARGO_TARGET_TMPDIR")).join("critest");
    std::fs::create_dir_all(reports.join("containerd"))?;
    std::fs::create_dir_all(reports.join("gantry"))?;

    // GANTRY_CRITEST_FOCUS (a spec regex) and GANTRY_CRITEST_ONLY_GANTRY=1 narrow a
    // local run while debugging; CI sets neither.
    let (ctd, ctd_log) = if std::env::var_os("GANTRY_CRITEST_ONLY_GANTRY").is_some() {
        (Outcome::default(), String::new())
    } else {
        critest(&bed.containerd.endpoint(), &reports.join("containerd"))?
    };
    std::fs::write(reports.join("containerd.log"), &ctd_log)?;
    let (gantry, gantry_log) = critest(&cri.endpoint(), &reports.join("gantry"))?;
    std::fs::write(reports.join("gantry.log"), &gantry_log)?;

    println!("critest            ran/total  passed  failed  skipped  seconds");
    for (name, o) in [("containerd CRI", &ctd), ("gantry cri", &gantry)] {
        println!(
            "{name:<18} {:>4}/{:<5} {:>7} {:>7} {:>8} {:>8.0}",
            o.ran, o.total, o.passed, o.failed, o.skipped, o.seconds
        );
    }
    for f in &gantry.failures {
        println!("gantry cri FAIL: {f}");
    }
    for f in &ctd.failures {
        println!("containerd CRI FAIL: {f}");
    }
    ensure!(
        gantry.ran > 0,
        "critest ran nothing on gantry cri:\n{gantry_log}"
    );
    let unexpected: Vec<&String> = gantry
        .failures
        .iter()
        .filter(|f| !KNOWN_GAPS.iter().any(|(k, _)| f.contains(k)))
        .collect();
    let fixed: Vec<&str> = KNOWN_GAPS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !gantry.failures.iter().any(|f| f.contains(k)))
        .collect();
    ensure!(
        unexpected.is_empty(),
        "critest specs failing on gantry cri: {unexpected:#?} (log: {}; containerd's log shows its own run)",
        reports.join("gantry.log").display()
    );
    ensure!(
        fixed.is_empty(),
        "known gaps that pass now (remove them from KNOWN_GAPS): {fixed:?}"
    );
    bed.teardown()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ginkgo_summaries_are_parsed() {
        let text = "Ran 80 of 85 Specs in 120.1 seconds\nFAIL! -- 78 Passed | 2 Failed | 0 Pending | 5 Skipped\n\nSummarizing 2 Failures:\n  [FAIL] [k8s.io] Container runtime should support attach [Conformance]\n";
        let o = parse(text);
        assert_eq!(
            (o.ran, o.total, o.passed, o.failed, o.skipped),
            (80, 85, 78, 2, 5)
        );
        assert_eq!(o.failures.len(), 1);
    }
}
