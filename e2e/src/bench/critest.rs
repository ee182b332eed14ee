//! P5: critest's benchmarks (`critest -benchmark`) against a CRI socket. critest writes
//! one JSON file per lifecycle benchmark (operation names and, per sample, each
//! operation's duration in ns); this reads them into seconds per operation.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::paths;

/// Runs the benchmarks with `samples` pods, containers and images each (serially) and
/// returns each operation's durations (s). critest's output goes to `dir`/critest.log.
pub fn run(endpoint: &str, dir: &Path, samples: u32) -> Result<BTreeMap<String, Vec<f64>>> {
    std::fs::create_dir_all(dir)?;
    let params = dir.join("params.yaml");
    std::fs::write(
        &params,
        format!(
            "containersNumber: {samples}\ncontainersNumberParallel: 1\ncontainerBenchmarkTimeoutSeconds: 120\n\
             podsNumber: {samples}\npodsNumberParallel: 1\npodBenchmarkTimeoutSeconds: 120\n\
             imagesNumber: {images}\nimagesNumberParallel: 1\nimageBenchmarkTimeoutSeconds: 120\n",
            images = samples.min(20)
        ),
    )?;
    let out = Command::new("timeout")
        .args(["--signal=KILL", "1200"])
        .arg(paths::tool("critest")?)
        .arg("-benchmark")
        .arg(format!("--runtime-endpoint={endpoint}"))
        .arg(format!("--image-endpoint={endpoint}"))
        .arg(format!("--benchmarking-params-file={}", params.display()))
        .arg(format!("--benchmarking-output-dir={}", dir.display()))
        .arg("--ginkgo.no-color")
        .output()
        .context("run critest -benchmark")?;
    let log = dir.join("critest.log");
    std::fs::write(
        &log,
        [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
    )?;
    if !out.status.success() {
        eprintln!(
            "bench: critest -benchmark on {endpoint} exited with {} (see {}); using the results it wrote",
            out.status,
            log.display()
        );
    }
    let mut ops: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for file in [
        "pod_benchmark_data.json",
        "container_benchmark_data.json",
        "image_lifecycle_benchmark_data.json",
        "image_listing_benchmark_data.json",
    ] {
        let path = dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("bench: critest wrote no {}", path.display());
            continue;
        };
        parse_into(&text, &mut ops).with_context(|| format!("parse {}", path.display()))?;
    }
    Ok(ops)
}

fn parse_into(text: &str, ops: &mut BTreeMap<String, Vec<f64>>) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let names: Vec<String> = v["operationsNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for dp in v["datapoints"].as_array().into_iter().flatten() {
        let Some(d) = dp["operationsDurationsNs"].as_array() else {
            continue;
        };
        for (name, ns) in names.iter().zip(d) {
            if let Some(ns) = ns.as_f64() {
                ops.entry(name.clone()).or_default().push(ns / 1e9);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_per_operation() {
        let text = r#"{"operationsNames":["CreatePod","StatusPod"],"numParallel":1,"datapoints":[
            {"sampleIndex":0,"operationsDurationsNs":[2000000,1000]},
            {"sampleIndex":1,"operationsDurationsNs":[4000000,3000]}]}"#;
        let mut ops = BTreeMap::new();
        parse_into(text, &mut ops).unwrap();
        assert_eq!(ops["CreatePod"], vec![0.002, 0.004]);
        assert_eq!(ops["StatusPod"].len(), 2);
    }
}
