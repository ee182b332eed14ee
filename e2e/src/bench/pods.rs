//! Benchmark pods through the API: created and deleted with kube's client, timed by one
//! watch on every benchmark pod. Each watch event is stamped when it arrives, so the
//! latencies are what a client watching the API sees.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

/// The label on every benchmark pod (the watch selects it).
pub const LABEL: &str = "gantry-bench";
pub const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
pub const NAMESPACE: &str = "default";

/// When the watch first saw a pod in each state.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub added: Option<Instant>,
    pub running: Option<Instant>,
    pub ready: Option<Instant>,
    pub deleted: Option<Instant>,
}

pub struct Pods {
    pub api: Api<Pod>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    watch: tokio::task::JoinHandle<()>,
}

pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

impl Pods {
    /// Starts the watch on pods labelled [`LABEL`] and waits until it has listed them.
    pub async fn start(client: Client) -> Result<Pods> {
        let api: Api<Pod> = Api::namespaced(client, NAMESPACE);
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stream = watcher(api.clone(), watcher::Config::default().labels(LABEL));
        let s = seen.clone();
        let watch = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut stream = std::pin::pin!(stream);
            loop {
                let ev = match stream.try_next().await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("bench: pod watch: {e} (retrying)");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let now = Instant::now();
                match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        record(&s, &p, now, false)
                    }
                    watcher::Event::Delete(p) => record(&s, &p, now, true),
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Init => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .context("the pod watch did not list within 60 s")??;
        Ok(Pods { api, seen, watch })
    }

    pub fn seen(&self, name: &str) -> Seen {
        self.seen
            .lock()
            .map(|m| m.get(name).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Creates pod `name` on `node`; returns the instant just before the create call.
    pub async fn create(&self, name: &str, node: &str) -> Result<Instant> {
        let pod: Pod = serde_json::from_value(manifest(name, node))?;
        let t = Instant::now();
        self.api
            .create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("create pod {name} on {node}"))?;
        Ok(t)
    }

    /// Deletes pod `name` with gracePeriodSeconds=0; returns the instant before the call.
    pub async fn delete_now(&self, name: &str) -> Result<Instant> {
        let t = Instant::now();
        self.api
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
            .with_context(|| format!("delete pod {name}"))?;
        Ok(t)
    }

    /// Creates every pod of `names` on `node` with up to 16 calls in flight; returns the
    /// instant before the first call.
    pub async fn create_all(&self, names: &[String], node: &str) -> Result<Instant> {
        let t = Instant::now();
        futures::stream::iter(names.iter().map(|n| self.create(n, node)))
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(t)
    }

    pub async fn delete_all(&self, names: &[String]) -> Result<()> {
        futures::stream::iter(names.iter().map(|n| self.delete_now(n)))
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Waits until `done` holds for every pod of `names`, or fails after `timeout`
    /// naming the pods still waiting.
    pub async fn wait(
        &self,
        names: &[String],
        what: &str,
        timeout: Duration,
        done: impl Fn(&Seen) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let waiting: Vec<&String> = names.iter().filter(|n| !done(&self.seen(n))).collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} of {} pods not {what} after {timeout:?}: {:?}",
                    waiting.len(),
                    names.len(),
                    &waiting[..waiting.len().min(5)]
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

fn record(seen: &Mutex<HashMap<String, Seen>>, p: &Pod, now: Instant, deleted: bool) {
    let Some(name) = p.metadata.name.clone() else {
        return;
    };
    let Ok(mut m) = seen.lock() else { return };
    let e = m.entry(name).or_default();
    e.added.get_or_insert(now);
    if deleted {
        e.deleted.get_or_insert(now);
        return;
    }
    let status = p.status.as_ref();
    if status.and_then(|s| s.phase.as_deref()) == Some("Running") {
        e.running.get_or_insert(now);
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        e.ready.get_or_insert(now);
    }
}

/// A benchmark pod: busybox sleeping forever, pinned to `node` by nodeName (no
/// scheduler in the path), image present (IfNotPresent after the pre-pull), no probes
/// (Ready as soon as its container runs), no service-account token or service links
/// (the node's own work, not TokenRequest round trips), killed at once on deletion.
pub fn manifest(name: &str, node: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { LABEL: "1" } },
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "sleep",
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "infinity"],
            }],
        },
    })
}
