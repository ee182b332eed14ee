//! Image garbage collection on a Gantry node (embedded CRI), as an operator sees it:
//! with thresholds every disk is past (high 1 %, low 0 %), a round of image GC removes
//! the images no container uses and keeps the ones a running pod was created from, and
//! the node gets upstream's FreeDiskSpaceFailed warning since it can never get the disk
//! to 0 %. A round runs when the agent starts and every 5 minutes; the test restarts the
//! agent to have one at a known time. The minimum age keeps its default (2m): images
//! already there when the agent starts are of unknown age and old enough, as upstream.

use std::time::Duration;

use anyhow::{ensure, Result};
use gantry_e2e::gantry_node::{self, GantryNode, NodeRuntime};
use gantry_e2e::{wait, Bed, BedOptions};
use serde_json::json;

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const NGINX: &str = "registry.k8s.io/e2e-test-images/nginx:1.14-2";

#[test]
fn unused_images_are_collected_past_the_high_threshold() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-image-gc"))?;
    let mut node = gantry_node::start_tuned(&mut bed, "gc", NodeRuntime::Embedded, &|c| {
        c["imageGCHighThresholdPercent"] = json!(1);
        c["imageGCLowThresholdPercent"] = json!(0);
    })?;
    let result = collect_unused(&mut bed, &mut node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}

fn pod(name: &str, node: &str, image: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image,
                            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}],
        },
    })
    .to_string()
}

/// The image references the node's runtime lists (`crictl images`).
fn images(node: &GantryNode) -> Result<Vec<String>> {
    let out = node.crictl()?.args(["images", "-o", "json"]).output()?;
    ensure!(
        out.status.success(),
        "crictl images: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(list["images"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["repoTags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect())
}

fn collect_unused(bed: &mut Bed, node: &mut GantryNode) -> Result<()> {
    let k = bed.kubectl()?;
    k.apply_yaml(&pod("keep", &node.name, BUSYBOX))?;
    k.apply_yaml(&pod("drop", &node.name, NGINX))?;
    for name in ["keep", "drop"] {
        wait::until(&format!("{name} to run"), Duration::from_secs(90), || {
            Ok((k.get_json(&["pod", name])?["status"]["phase"] == "Running").then_some(()))
        })?;
    }
    let before = images(node)?;
    ensure!(
        before.iter().any(|i| i == BUSYBOX) && before.iter().any(|i| i == NGINX),
        "both images should be on the node: {before:?}"
    );
    k.run(&["delete", "pod", "drop", "--wait=true", "--timeout=60s"])?;
    wait::until(
        "the deleted pod's containers to be removed",
        Duration::from_secs(60),
        || {
            let out = node
                .crictl()?
                .args(["ps", "-a", "-q", "--label", "io.kubernetes.pod.name=drop"])
                .output()?;
            Ok((out.status.success() && out.stdout.trim_ascii().is_empty()).then_some(()))
        },
    )?;

    node.restart(bed, libc::SIGTERM)?;
    let after = wait::until(
        "image GC to remove the unused nginx image",
        Duration::from_secs(60),
        || {
            let now = images(node)?;
            Ok((!now.iter().any(|i| i == NGINX)).then_some(now))
        },
    )?;
    ensure!(
        after.iter().any(|i| i == BUSYBOX),
        "image GC removed the image of a running pod: {after:?}"
    );
    let keep = k.get_json(&["pod", "keep"])?;
    ensure!(
        keep["status"]["phase"] == "Running"
            && keep["status"]["containerStatuses"][0]["restartCount"] == 0,
        "the pod using the kept image was disturbed: {}",
        keep["status"]
    );
    // A new pod of the removed image pulls it again.
    k.apply_yaml(&pod("again", &node.name, NGINX))?;
    wait::until(
        "a pod of the collected image to run",
        Duration::from_secs(90),
        || Ok((k.get_json(&["pod", "again"])?["status"]["phase"] == "Running").then_some(())),
    )?;

    let events = wait::until(
        "the FreeDiskSpaceFailed warning on the node",
        Duration::from_secs(30),
        || {
            let list = k.get_json(&[
                "events",
                "--field-selector",
                &format!(
                    "involvedObject.kind=Node,involvedObject.name={},reason=FreeDiskSpaceFailed",
                    node.name
                ),
            ])?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            Ok((!items.is_empty()).then_some(items))
        },
    )?;
    let message = events[0]["message"].as_str().unwrap_or("");
    ensure!(
        events[0]["type"] == "Warning"
            && message.starts_with(
                "Failed to garbage collect required amount of images. Attempted to free "
            )
            && message.contains(" bytes, but only found "),
        "unexpected FreeDiskSpaceFailed event: {}",
        events[0]
    );
    for name in ["keep", "again"] {
        k.run(&["delete", "pod", name, "--wait=false"])?;
    }
    Ok(())
}
