//! Events as the upstream kubelet posts them (core/v1, source component "kubelet",
//! host = node name): one Event per (object, field path, type, reason, message),
//! repeated occurrences counted on it (client-go's event correlator does the same).
//! Posting happens on a background task so no pod worker waits for the API.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use crate::bootstrap::ClientHandle;
use crate::rate_limit::RateLimiter;
use std::sync::Arc;

struct Pending {
    object: ObjectReference,
    type_: String,
    reason: String,
    message: String,
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Pending>,
    node: String,
}

impl Recorder {
    /// A recorder and the task that posts its events (run it until shutdown).
    pub fn new(
        client: ClientHandle,
        node: &str,
        limiter: Arc<RateLimiter>,
    ) -> (Recorder, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = Recorder {
            tx,
            node: node.to_string(),
        };
        (recorder, post_events(client, node.to_string(), rx, limiter))
    }

    /// An event about the Node (Starting, NodeReady, ...). Upstream's node events carry
    /// the node's name as its UID too.
    pub fn node_event(&self, type_: &str, reason: &str, message: &str) {
        let object = ObjectReference {
            kind: Some("Node".to_string()),
            name: Some(self.node.clone()),
            uid: Some(self.node.clone()),
            ..Default::default()
        };
        self.record(object, type_, reason, message);
    }

    pub fn record(&self, object: ObjectReference, type_: &str, reason: &str, message: &str) {
        let _ = self.tx.send(Pending {
            object,
            type_: type_.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        });
    }
}

/// (namespace, uid, fieldPath, type, reason, message): events that count as one.
type EventKey = (String, String, String, String, String, String);

async fn post_events(
    client: ClientHandle,
    node: String,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    limiter: Arc<RateLimiter>,
) {
    let mut seen: HashMap<EventKey, (String, i32)> = HashMap::new();
    while let Some(p) = rx.recv().await {
        let namespace = p
            .object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let key = (
            namespace.clone(),
            p.object.uid.clone().unwrap_or_default(),
            p.object.field_path.clone().unwrap_or_default(),
            p.type_.clone(),
            p.reason.clone(),
            p.message.clone(),
        );
        limiter.acquire().await;
        let events: Api<Event> = Api::namespaced(client.get(), &namespace);
        let now = jiff::Timestamp::now();
        if let Some((name, count)) = seen.get_mut(&key) {
            *count += 1;
            let patch = serde_json::json!({
                "count": *count,
                "lastTimestamp": Time(now),
            });
            match events
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => continue,
                // Gone (events expire after an hour): post a new one below.
                Err(e) => tracing::debug!(error = %e, "patch event {name}"),
            }
        }
        let object_name = p.object.name.clone().unwrap_or_default();
        let name = format!("{object_name}.{:x}", now.as_nanosecond());
        let mut event = Event {
            involved_object: p.object,
            type_: Some(p.type_),
            reason: Some(p.reason),
            message: Some(p.message),
            source: Some(EventSource {
                component: Some("kubelet".to_string()),
                host: Some(node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            count: Some(1),
            reporting_component: Some("kubelet".to_string()),
            reporting_instance: Some(node.clone()),
            ..Default::default()
        };
        event.metadata.name = Some(name.clone());
        event.metadata.namespace = Some(namespace);
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => {
                seen.insert(key, (name, 1));
            }
            Err(e) => tracing::warn!(error = %e, reason = ?event.reason, "post event"),
        }
        if seen.len() > 4096 {
            seen.clear();
        }
    }
}
