//! Volumes as users write them (manifests/examples/volumes) on a node of the bed, checked
//! as a user sees them: each pod verifies its own files (content, mode, owner) and prints
//! OK/FAIL lines and a RESULT line, which the checks here read with `kubectl logs`; then
//! live updates of configMap, secret and downward-API files, a projected token that the
//! API server's TokenReview accepts, FailedMount for a missing configMap and a hostPath of
//! the wrong type, subPath escapes refused with CreateContainerConfigError, a claim bound
//! to a static PV whose data lands on the node, and nothing left on the node once the
//! pods are deleted.
//!
//! Every check runs and is reported (PASS/FAIL on stdout) even when an earlier one
//! failed, so one run says which volume kinds work; the test fails if any check failed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use crate::bed::Bed;
use crate::gantry_node::GantryNode;
use crate::kubectl::Kubectl;
use crate::{paths, wait};

mod observe;
use observe::{
    events, judge, log_line_appears, logs, pod_story, pod_uid, remaining, self_check, waiting,
    with_story, Checks,
};

/// The host path the example manifests use; the test puts it inside the bed's directory.
const EXAMPLE_HOST_ROOT: &str = "/tmp/gantry-examples";
const TOKEN_AUDIENCE: &str = "gantry-e2e-volumes";

/// Manifests in the order they are applied.
const MANIFESTS: &[&str] = &[
    "configmap.yaml",
    "secret.yaml",
    "downwardapi.yaml",
    "projected.yaml",
    "hostpath.yaml",
    "hostpath-wrong-type.yaml",
    "pvc.yaml",
    "local-pv.yaml",
    "subpath.yaml",
    "subpath-escape.yaml",
    "fsgroup.yaml",
    "missing-configmap.yaml",
    "refused.yaml",
];

/// Pods that check their own volumes and print "RESULT: ...", with the checking container.
const SELF_CHECKING: &[(&str, &str)] = &[
    ("configmap-volume", "app"),
    ("secret-volume", "app"),
    ("downward-volume", "app"),
    ("projected-volume", "app"),
    ("hostpath-volume", "app"),
    ("pvc-volume", "app"),
    ("local-pv-volume", "app"),
    ("subpath-volume", "app"),
    ("fsgroup-volume", "app"),
];

/// Upstream refreshes configMap/secret/downwardAPI files on the pod's periodic sync
/// (syncFrequency 1 min, jittered up to 1.5 min); a little more than that.
const LIVE_UPDATE: Duration = Duration::from_secs(100);

pub fn node_mounts_volumes(bed: &Bed, node: &GantryNode) -> Result<()> {
    let k = bed.kubectl()?;
    let host_root = bed.dir().join("volume-host");
    prepare_host(&host_root)?;
    for m in MANIFESTS {
        let text = fs::read_to_string(example(m))?
            .replace(EXAMPLE_HOST_ROOT, &host_root.to_string_lossy())
            .replace("- my-node", &format!("- {}", node.name));
        k.apply_yaml(&text).with_context(|| format!("apply {m}"))?;
    }
    let applied = Instant::now();
    let mut checks = Checks {
        started: applied,
        results: Vec::new(),
    };

    // The missing configMap first: its FailedMount comes while the others start.
    // Pods that must not start: one deadline for all their waits.
    let refusals = applied + Duration::from_secs(120);
    checks.run("missing configMap: FailedMount, pod waits", || {
        missing_config_map_waits(&k, refusals)
    });
    k.run(&[
        "create",
        "configmap",
        "late-settings",
        "--from-literal=greeting=finally",
    ])?;

    let deadline = applied + Duration::from_secs(240);
    // The pods that ran their checks, passed or not: the later checks need them running.
    let mut ran = Vec::new();
    for (pod, container) in SELF_CHECKING {
        checks.run(&format!("{pod}: in-container checks"), || {
            let out = self_check(&k, pod, container, deadline)?;
            ran.push(*pod);
            judge(pod, &out)
        });
    }
    let running = |pod: &str| ran.contains(&pod);

    // Live updates, started together and awaited after the other checks.
    let updates_started = Instant::now();
    k.run(&[
        "patch",
        "configmap",
        "app-settings",
        "-p",
        r#"{"data":{"greeting":"updated"}}"#,
    ])?;
    k.run(&[
        "patch",
        "secret",
        "db-credentials",
        "-p",
        r#"{"stringData":{"password":"rotated"}}"#,
    ])?;
    k.run(&[
        "patch",
        "configmap",
        "subpath-settings",
        "-p",
        r#"{"data":{"app.conf":"listen 9090"}}"#,
    ])?;
    k.run(&["label", "pod", "downward-volume", "release=canary"])?;

    checks.run(
        "projected token: TokenReview as the service account",
        || {
            ensure!(running("projected-volume"), "projected-volume never ran");
            projected_token_is_accepted(&k)
        },
    );
    checks.run("hostPath: created on the node, data shared", || {
        ensure!(running("hostpath-volume"), "hostpath-volume never ran");
        host_path_reaches_the_node(&k, &host_root)
    });
    checks.run("hostPath type File on a directory: FailedMount", || {
        host_path_wrong_type_is_refused(&k, refusals)
    });
    checks.run("missing secret: FailedMount", || {
        failed_mount(
            &k,
            "missing-secret",
            r#"MountVolume.SetUp failed for volume "creds" : secret "no-such-secret" not found"#,
            refusals,
        )
    });
    checks.run("NFS volume: FailedMount, not supported", || {
        failed_mount(
            &k,
            "nfs-volume",
            r#"MountVolume.SetUp failed for volume "share" : volume "share": this volume type is not supported by Gantry (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected, persistentVolumeClaim of hostPath or local volumes)"#,
            refusals,
        )
    });
    checks.run("persistentVolumeClaim: bound, data in the PV's dir", || {
        ensure!(running("pvc-volume"), "pvc-volume never ran");
        claim_lands_in_the_volume(&k, &host_root)
    });
    checks.run(
        "subPath symlink to /etc: CreateContainerConfigError",
        || subpath_symlink_is_refused(&k, refusals),
    );
    checks.run(
        "subPath swapped for a symlink to /: restart refused",
        || subpath_swap_is_refused(&k, refusals),
    );

    let update_deadline = updates_started + LIVE_UPDATE;
    for (name, pod, line) in [
        (
            "configMap update seen in the pod",
            "configmap-volume",
            "greeting changed: updated",
        ),
        (
            "secret update seen in the pod",
            "secret-volume",
            "password changed: rotated",
        ),
        (
            "downwardAPI labels updated after kubectl label",
            "downward-volume",
            r#"labels changed: app="shop" release="canary" tier="backend""#,
        ),
    ] {
        checks.run(name, || {
            ensure!(running(pod), "{pod} never ran");
            log_line_appears(&k, pod, line, update_deadline)
        });
    }
    checks.run("configMap key mounted by subPath keeps its content", || {
        ensure!(running("subpath-volume"), "subpath-volume never ran");
        subpath_config_map_is_not_updated(&k, node, update_deadline)
    });
    checks.run("missing configMap: pod starts once it exists", || {
        // Upstream retries a failed mount with a back-off that reaches about a minute.
        let r = wait::until(
            "missing-configmap to print its greeting",
            Duration::from_secs(150),
            || {
                let out = logs(&k, "missing-configmap", "app")?;
                match out.lines().find(|l| l.starts_with("greeting:")) {
                    Some("greeting: finally") => Ok(Some(())),
                    Some(other) => Err(wait::fatal(format!("the pod printed {other:?}"))),
                    None => Ok(None),
                }
            },
        );
        with_story(&k, "missing-configmap", r)
    });

    checks.run("deleted pods leave no directory or mount", || {
        nothing_left_after_delete(&k, node, &host_root)
    });
    println!(
        "volumes: {} checks in {:?}",
        checks.results.len(),
        applied.elapsed()
    );
    checks.finish()
}

/// What the manifests' comments ask a user to create on the node first.
fn prepare_host(host_root: &Path) -> Result<()> {
    use std::os::unix::fs::{chown, PermissionsExt};
    let set_mode = |p: &Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode));
    fs::create_dir_all(host_root.join("hostpath"))?;
    fs::write(host_root.join("hostpath/seed.txt"), "seeded by the node\n")?;
    for dir in ["matching", "fresh"] {
        let d = host_root.join("local").join(dir);
        fs::create_dir_all(&d)?;
        set_mode(&d, 0o755)?;
        fs::write(d.join("old.txt"), "old\n")?;
        set_mode(&d.join("old.txt"), 0o644)?;
    }
    let matching = host_root.join("local/matching");
    chown(&matching, None, Some(2000))?;
    set_mode(&matching, 0o2775)?;
    Ok(())
}

fn example(name: &str) -> PathBuf {
    paths::repo_root()
        .join("manifests/examples/volumes")
        .join(name)
}

/// As upstream: a FailedMount warning with exactly upstream's message, naming the volume
/// and why, and the pod stays Pending with its container waiting in ContainerCreating.
fn failed_mount(k: &Kubectl, pod: &str, message: &str, deadline: Instant) -> Result<()> {
    let want = format!("Warning FailedMount: {message}");
    let r = wait::until(
        &format!("{pod} to get the event {want:?}"),
        remaining(deadline),
        || {
            let phase = k.get_json(&["pod", pod])?["status"]["phase"].clone();
            if phase != "Pending" {
                return Err(wait::fatal(format!(
                    "{pod} is {phase} without its volume mounted"
                )));
            }
            let failed: Vec<String> = events(k, pod)?
                .into_iter()
                .filter(|e| e.starts_with("Warning FailedMount: "))
                .collect();
            if failed.contains(&want) {
                return Ok(Some(want.clone()));
            }
            // A FailedMount for the same volume with other words will not change.
            let volume = want.split(" : ").next().unwrap_or(&want);
            if let Some(other) = failed.iter().find(|e| e.starts_with(volume)) {
                return Err(wait::fatal(format!(
                    "the event says {other:?}, upstream's says {want:?}"
                )));
            }
            Ok(None)
        },
    );
    println!("volumes: {pod}: {}", with_story(k, pod, r)?);
    let p = k.get_json(&["pod", pod])?;
    let (reason, _) = waiting(&p, "app");
    ensure!(
        p["status"]["phase"] == "Pending" && reason == "ContainerCreating",
        "{pod} is not waiting in ContainerCreating:\n{}",
        pod_story(k, pod)
    );
    Ok(())
}

fn missing_config_map_waits(k: &Kubectl, deadline: Instant) -> Result<()> {
    failed_mount(
        k,
        "missing-configmap",
        r#"MountVolume.SetUp failed for volume "settings" : configmap "late-settings" not found"#,
        deadline,
    )
}

fn host_path_wrong_type_is_refused(k: &Kubectl, deadline: Instant) -> Result<()> {
    // Upstream's text, word for word (pkg/volume/hostpath's typeMatchedOrError, which
    // replaced checkTypeInternal's shorter message).
    failed_mount(
        k,
        "hostpath-wrong-type",
        r#"MountVolume.SetUp failed for volume "not-a-file" : hostPath type check failed: /tmp is not a file, it's a Directory"#,
        deadline,
    )
}

/// The JSON payload of a JWT.
fn jwt_claims(token: &str) -> Result<Value> {
    let payload = token.split('.').nth(1).context("the token is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("decode the token's payload")?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// `kubectl create` of a TokenReview; the review's status.
fn token_review(k: &Kubectl, token: &str, audiences: &[&str]) -> Result<Value> {
    let mut spec = json!({ "token": token });
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": spec,
    });
    let out = k.run_with_stdin(
        &["create", "-f", "-", "-o", "json"],
        Some(&review.to_string()),
    )?;
    let v: Value = serde_json::from_str(&out).context("parse the TokenReview")?;
    Ok(v["status"].clone())
}

/// The token in the projected volume is for the audience asked for, bound to the pod,
/// valid for the hour asked for, and the API server authenticates it as the pod's
/// service account for that audience only; the default token volume's token is
/// accepted for the API server's own audience.
fn projected_token_is_accepted(k: &Kubectl) -> Result<()> {
    let pod = "projected-volume";
    let user = "system:serviceaccount:default:projected-reader";
    let token = k.run(&["exec", pod, "--", "cat", "/var/run/bundle/token"])?;
    let claims = jwt_claims(&token)?;
    let aud = &claims["aud"];
    ensure!(
        aud == &json!([TOKEN_AUDIENCE]) || aud == TOKEN_AUDIENCE,
        "token audience {aud}, want {TOKEN_AUDIENCE}"
    );
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    ensure!(
        lifetime == 3600,
        "token valid for {lifetime} s, expirationSeconds was 3600"
    );
    ensure!(
        claims["kubernetes.io"]["pod"]["name"] == pod,
        "token not bound to the pod: {claims}"
    );

    let status = token_review(k, &token, &[TOKEN_AUDIENCE])?;
    println!("volumes: TokenReview for {TOKEN_AUDIENCE}: {status}");
    ensure!(
        status["authenticated"] == true && status["user"]["username"] == user,
        "TokenReview for {TOKEN_AUDIENCE}: {status}"
    );
    ensure!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-name"] == json!([pod]),
        "TokenReview does not name the pod: {status}"
    );
    let other = token_review(k, &token, &[])?;
    ensure!(
        other["authenticated"] != true,
        "the {TOKEN_AUDIENCE} token is accepted for the API server's audience too: {other}"
    );

    let default = k.run(&[
        "exec",
        pod,
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
    ])?;
    let status = token_review(k, &default, &[])?;
    ensure!(
        status["authenticated"] == true && status["user"]["username"] == user,
        "TokenReview of the default token volume's token: {status}"
    );
    Ok(())
}

fn mode_of(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// DirectoryOrCreate made the directory on the node (0755) and the pod's file is in it;
/// the FileOrCreate file the node had is what the pod read.
fn host_path_reaches_the_node(k: &Kubectl, host_root: &Path) -> Result<()> {
    let dir = host_root.join("hostpath/data");
    let mode = mode_of(&dir)?;
    ensure!(mode == 0o755, "{} has mode {mode:o}", dir.display());
    let file = dir.join("from-pod.txt");
    let text = fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    ensure!(
        text == "written by the pod\n",
        "{}: {text:?}",
        file.display()
    );
    let out = logs(k, "hostpath-volume", "app")?;
    ensure!(
        out.lines().any(|l| l == "seed: seeded by the node"),
        "the pod did not read the node's file:\n{out}"
    );
    Ok(())
}

fn claim_lands_in_the_volume(k: &Kubectl, host_root: &Path) -> Result<()> {
    let pvc = k.get_json(&["pvc", "example-claim"])?;
    ensure!(
        pvc["status"]["phase"] == "Bound" && pvc["spec"]["volumeName"] == "example-pv",
        "claim not bound to example-pv: {}",
        pvc["status"]
    );
    let file = host_root.join("pv/from-pod.txt");
    let text = fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    ensure!(
        text == "written through the claim\n",
        "{}: {text:?}",
        file.display()
    );
    Ok(())
}

/// Every subPath bind mount of the pod comes from inside the pod's volumes, not from
/// the node's / or /etc (mountinfo's root field is the source path in its filesystem).
fn subpath_mounts_stay_inside(uid: &str) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut seen = 0;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        if point.contains(&format!("/pods/{uid}/volume-subpaths/"))
            && !root.contains(&format!("/pods/{uid}/volumes/"))
        {
            bail!("a subPath mount exposes {root} at {point}");
        }
        if point.contains(&format!("/pods/{uid}/volume-subpaths/")) {
            seen += 1;
        }
    }
    println!("volumes: pod {uid}: {seen} subPath mounts on the node, all inside its volumes");
    Ok(())
}

const SUBPATH_ERROR: &str = "failed to prepare subPath for volumeMount \"shared\" of container";

/// A subPath that is a symlink to /etc: the container is never created.
fn subpath_symlink_is_refused(k: &Kubectl, deadline: Instant) -> Result<()> {
    let pod = "subpath-escape";
    let want = format!("{SUBPATH_ERROR} \"reader\"");
    let r = wait::until(
        "reader to wait in CreateContainerConfigError",
        remaining(deadline),
        || {
            let p = k.get_json(&["pod", pod])?;
            let (reason, message) = waiting(&p, "reader");
            Ok((reason == "CreateContainerConfigError").then_some(message))
        },
    );
    let message = with_story(k, pod, r)?;
    println!("volumes: subpath-escape reader waits: {message}");
    ensure!(
        message.starts_with(&want),
        "waiting message {message:?}, want it to start with {want:?}"
    );
    let planted = logs(k, pod, "plant")?;
    ensure!(planted.contains("planted"), "plant logs: {planted:?}");
    let p = k.get_json(&["pod", pod])?;
    let reader = &p["status"]["containerStatuses"][0];
    ensure!(
        reader["restartCount"] == 0 && reader["lastState"]["terminated"].is_null(),
        "reader ran: {reader}"
    );
    subpath_mounts_stay_inside(&pod_uid(k, pod)?)
}

/// The worker ran once on a plain folder; its neighbour swapped the folder for a
/// symlink to /; the worker's restart is refused and it never saw the node's files.
fn subpath_swap_is_refused(k: &Kubectl, deadline: Instant) -> Result<()> {
    let pod = "subpath-swap";
    let want = format!("{SUBPATH_ERROR} \"worker\"");
    // The waiting reason alternates with CrashLoopBackOff (the worker exited before),
    // so the Failed event is the lasting sign, as in `kubectl describe`.
    let r = wait::until("the worker's restart to fail", remaining(deadline), || {
        let p = k.get_json(&["pod", pod])?;
        let (reason, message) = waiting(&p, "worker");
        if reason == "CreateContainerConfigError" {
            return Ok(Some(message));
        }
        let ev = events(k, pod)?;
        Ok(ev
            .iter()
            .find(|e| e.starts_with("Warning Failed: Error: ") && e.contains(SUBPATH_ERROR))
            .map(|e| e["Warning Failed: Error: ".len()..].to_string()))
    });
    let message = with_story(k, pod, r)?;
    println!("volumes: subpath-swap worker restart refused: {message}");
    ensure!(
        message.starts_with(&want),
        "error {message:?}, want it to start with {want:?}"
    );
    let swapper = logs(k, pod, "swapper")?;
    ensure!(swapper.contains("swapped"), "swapper logs: {swapper:?}");
    let worker = logs(k, pod, "worker")?;
    ensure!(worker.contains("run:"), "the worker never ran: {worker:?}");
    ensure!(!worker.contains("LEAKED"), "worker logs: {worker:?}");
    println!("volumes: subpath-swap worker's run: {}", worker.trim());
    let p = k.get_json(&["pod", pod])?;
    let status = p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "worker")
        .cloned()
        .unwrap_or_default();
    ensure!(
        status["state"]["running"].is_null(),
        "the worker runs again: {status}"
    );
    subpath_mounts_stay_inside(&pod_uid(k, pod)?)
}

/// The configMap volume itself is updated on the node, while the file the container
/// mounted by subPath keeps the content it started with (as upstream).
fn subpath_config_map_is_not_updated(
    k: &Kubectl,
    node: &GantryNode,
    deadline: Instant,
) -> Result<()> {
    let pod = "subpath-volume";
    let uid = pod_uid(k, pod)?;
    let file = node
        .dir
        .join("root/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~configmap/settings/app.conf");
    wait::until(
        "the configMap volume on the node to be updated",
        remaining(deadline),
        || Ok((fs::read_to_string(&file).ok().as_deref() == Some("listen 9090")).then_some(())),
    )?;
    let seen = k.run(&["exec", pod, "-c", "app", "--", "cat", "/etc/app.conf"])?;
    ensure!(
        seen == "listen 8080",
        "the subPath file shows {seen:?}, want the content it started with"
    );
    Ok(())
}

/// Deleting the pods removes their directories under the node's root dir and every
/// mount of theirs; the retained PV keeps its data.
fn nothing_left_after_delete(k: &Kubectl, node: &GantryNode, host_root: &Path) -> Result<()> {
    let list = k.get_json(&["pods"])?;
    let uids: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
        .collect();
    ensure!(!uids.is_empty(), "no pods to delete");
    let pv_file = host_root.join("pv/from-pod.txt");
    let pv_written = pv_file.exists();
    k.run(&["delete", "pods", "--all", "--wait=true", "--timeout=120s"])?;
    let pods_dir = node.dir.join("root/pods");
    wait::until(
        "the deleted pods' directories and mounts to be gone",
        Duration::from_secs(60),
        || {
            let info = fs::read_to_string("/proc/self/mountinfo")?;
            let mut left = Vec::new();
            for uid in &uids {
                if pods_dir.join(uid).exists() {
                    left.push(format!("{}", pods_dir.join(uid).display()));
                }
                left.extend(
                    info.lines()
                        .filter(|l| l.contains(uid.as_str()))
                        .map(|l| format!("mount: {l}")),
                );
            }
            if left.is_empty() {
                Ok(Some(()))
            } else {
                bail!("left: {}", left.join("; "))
            }
        },
    )?;
    ensure!(
        !pv_written || pv_file.exists(),
        "{} is gone with the pod, but the PV is retained",
        pv_file.display()
    );
    Ok(())
}
