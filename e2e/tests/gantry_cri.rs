//! `gantry cri` as crictl users drive it, on the bed's containerd and image mirror.
//! Covers what Gantry's CRI serves today: version, info, and the image commands
//! (pull, images, inspecti, imagefsinfo, rmi) with their error cases. Sandboxes and
//! containers are not served yet.

use std::process::Output;

use anyhow::{ensure, Context, Result};
use gantry_e2e::gantry_cri::GantryCri;
use gantry_e2e::{Bed, BedOptions};
use serde_json::Value;

fn crictl(cri: &GantryCri, args: &[&str]) -> Result<Output> {
    Ok(cri.crictl()?.args(args).output()?)
}

/// Runs crictl and returns its stdout; fails with its stderr if it exits non-zero.
fn ok(cri: &GantryCri, args: &[&str]) -> Result<String> {
    let out = crictl(cri, args)?;
    ensure!(
        out.status.success(),
        "crictl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(cri: &GantryCri, args: &[&str]) -> Result<Value> {
    let text = ok(cri, args)?;
    serde_json::from_str(&text).with_context(|| format!("crictl {} printed {text}", args.join(" ")))
}

#[test]
fn crictl_image_commands_work_against_gantry_cri() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-gantry-cri"))?;
    let cri = bed.start_gantry_cri("gantry-cri")?;

    let version = ok(&cri, &["version"])?;
    ensure!(
        version.contains("RuntimeName:  gantry"),
        "crictl version: {version}"
    );
    ensure!(
        version.contains("RuntimeApiVersion:  v1"),
        "crictl version: {version}"
    );

    let info = json(&cri, &["info"])?;
    let conditions = info["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for kind in ["RuntimeReady", "NetworkReady"] {
        ensure!(
            conditions
                .iter()
                .any(|c| c["type"] == kind && c["status"] == true),
            "crictl info does not report {kind}: {info}"
        );
    }

    // Pull through the mirror configured in containerd's hosts.toml format.
    let busybox = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
    let pulled = ok(&cri, &["pull", busybox])?;
    ensure!(
        pulled.contains("Image is up to date for sha256:"),
        "crictl pull: {pulled}"
    );
    let images = ok(&cri, &["images"])?;
    ensure!(
        images
            .lines()
            .any(|l| l.starts_with("registry.k8s.io/e2e-test-images/busybox")
                && l.contains("1.29-2")),
        "crictl images: {images}"
    );

    // Concurrent pulls of one image (kubelets pull per pod) all succeed and give one
    // image; every pull's lease is gone afterwards, so nothing pins content.
    let pause = "registry.k8s.io/pause:3.9";
    let pulls: Vec<_> = (0..4)
        .map(|_| cri.crictl().map(|mut c| c.args(["pull", pause]).spawn()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .collect::<std::io::Result<Vec<_>>>()?;
    for child in pulls {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "concurrent pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed = json(&cri, &["images", "-o", "json", pause])?;
    ensure!(
        listed["images"].as_array().map(Vec::len) == Some(1),
        "one pause image: {listed}"
    );
    let ctr = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("ctr")
            .arg("--address")
            .arg(&bed.containerd.socket)
            .args(["-n", &cri.namespace])
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    ensure!(
        ctr(&["images", "ls", "-q"])?.contains(pause),
        "containerd namespace {} holds the pulls",
        cri.namespace
    );
    let leases = ctr(&["leases", "ls", "-q"])?;
    ensure!(
        leases.trim().is_empty(),
        "pull leases left in containerd: {leases}"
    );

    // The CRI's own metrics on --metrics-bind-address count what crictl asked: the five
    // pulls so far, and a status request for an image that is not there.
    let missing = cri
        .crictl()?
        .args(["inspecti", "registry.k8s.io/no-such-image:1"])
        .output()?;
    ensure!(
        !missing.status.success(),
        "crictl inspecti of a missing image succeeded"
    );
    let (code, metrics) = gantry_e2e::http::http_get(&cri.metrics_addr, "/metrics")?;
    ensure!(code == 200, "GET /metrics on {}: {code}", cri.metrics_addr);
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let pulls = value(r#"gantry_cri_operations_total{operation_type="pull_image"}"#);
    ensure!(
        pulls >= 5.0,
        "gantry_cri_operations_total counts {pulls} pull_image calls, crictl made 5:\n{metrics}"
    );
    let statuses = value(r#"gantry_cri_operations_total{operation_type="image_status"}"#);
    ensure!(statuses >= 1.0, "no image_status call counted:\n{metrics}");
    ensure!(
        metrics.contains("process_resident_memory_bytes "),
        "no process metrics on {}:\n{metrics}",
        cri.metrics_addr
    );

    // One image, three tags: one ID; users from the image config.
    for tag in ["1", "2", "3"] {
        ok(
            &cri,
            &[
                "pull",
                &format!("gcr.io/k8s-staging-cri-tools/test-image-tags:{tag}"),
            ],
        )?;
    }
    let tagged = json(
        &cri,
        &[
            "images",
            "-o",
            "json",
            "gcr.io/k8s-staging-cri-tools/test-image-tags:2",
        ],
    )?;
    let entries = tagged["images"].as_array().cloned().unwrap_or_default();
    ensure!(
        entries.len() == 1,
        "three tags of one image list as one image: {tagged}"
    );
    ensure!(
        entries[0]["repoTags"].as_array().map(|t| t.len()) == Some(3),
        "three tags: {tagged}"
    );

    ok(
        &cri,
        &[
            "pull",
            "gcr.io/k8s-staging-cri-tools/test-image-user-uid-group",
        ],
    )?;
    let uid = json(
        &cri,
        &[
            "inspecti",
            "gcr.io/k8s-staging-cri-tools/test-image-user-uid-group",
        ],
    )?;
    ensure!(
        uid["status"]["uid"]["value"] == "1003",
        "uid of User 1003:1004: {uid}"
    );
    ok(
        &cri,
        &[
            "pull",
            "gcr.io/k8s-staging-cri-tools/test-image-user-username",
        ],
    )?;
    let named = json(
        &cri,
        &[
            "inspecti",
            "gcr.io/k8s-staging-cri-tools/test-image-user-username",
        ],
    )?;
    ensure!(
        named["status"]["username"] == "www-data",
        "username of User www-data: {named}"
    );

    let inspected = json(&cri, &["inspecti", busybox])?;
    ensure!(
        inspected["info"]["imageSpec"]["os"] == "linux"
            && inspected["info"]["imageSpec"]["architecture"] == "amd64",
        "inspecti shows the image config: {inspected}"
    );

    let fs = json(&cri, &["imagefsinfo"])?;
    let used: u64 = fs["status"]["imageFilesystems"][0]["usedBytes"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ensure!(used > 0, "imagefsinfo reports the unpacked layers: {fs}");

    // Errors a user can act on, with the codes crictl shows.
    let missing = crictl(&cri, &["pull", "registry.k8s.io/no-such-image:1"])?;
    let stderr = String::from_utf8_lossy(&missing.stderr);
    ensure!(
        !missing.status.success() && stderr.contains("code = NotFound"),
        "missing image: {stderr}"
    );
    ensure!(
        stderr.contains("registry.k8s.io/no-such-image:1"),
        "the error names the image: {stderr}"
    );
    let bad = crictl(&cri, &["pull", "Not/A Reference"])?;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success() && stderr.contains("code = InvalidArgument"),
        "bad reference: {stderr}"
    );

    // Removing one tag's image removes every tag of it; the others stay.
    let removed = ok(
        &cri,
        &["rmi", "gcr.io/k8s-staging-cri-tools/test-image-tags:1"],
    )?;
    ensure!(
        removed.matches("Deleted:").count() == 3,
        "rmi of a three-tag image: {removed}"
    );
    let images = ok(&cri, &["images"])?;
    ensure!(
        !images.contains("test-image-tags"),
        "tags left after rmi: {images}"
    );
    ensure!(
        images.contains("e2e-test-images/busybox"),
        "rmi removed another image: {images}"
    );

    // Teardown fails if any process, mount, cgroup, bridge or iptables rule of the
    // bed is left.
    bed.teardown()?;
    Ok(())
}
