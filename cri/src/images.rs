//! The ImageService over containerd's image records: list, status, remove and the
//! image filesystem's usage. One CRI image (ID = config digest) may have several
//! records: each tag and the repository digest it was pulled by.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use containerd_client::services::v1::{
    snapshots::{ListSnapshotsRequest, UsageRequest},
    DeleteImageRequest, Image as CtdImage, ListImagesRequest,
};

use crate::api;
use crate::containerd::Containerd;
use crate::content;
use crate::error::{CriError, Result};
use crate::image_pull::{
    parse_reference, Puller, LABEL_CHAIN_ID, LABEL_IMAGE_ID, LABEL_SIZE, LABEL_USER,
};

/// An image present in containerd, as CreateContainer needs it.
#[derive(Clone, Debug)]
pub struct LocalImage {
    pub id: String,
    /// The snapshot its layers unpacked to: the parent of a container's rootfs.
    pub chain_id: String,
    /// The OCI image config (entrypoint, cmd, env, user, working dir, stop signal).
    pub config: serde_json::Value,
    pub repo_digest: String,
}

pub struct Images {
    ctd: Containerd,
    pub puller: Arc<Puller>,
    snapshotter: String,
    snapshotter_root: std::path::PathBuf,
    /// The records as last listed, kept only while containerd's image events for the
    /// namespace are followed: ListImages and ImageStatus then answer from memory.
    /// Any image event, pull or removal drops them.
    cache: std::sync::Mutex<Cache>,
    /// Parsed image configs by image ID (content-addressed, so never stale).
    configs: std::sync::Mutex<HashMap<String, serde_json::Value>>,
}

/// How many parsed image configs are kept before the lot is dropped.
const KEPT_CONFIGS: usize = 64;

type Records = BTreeMap<String, Vec<CtdImage>>;

#[derive(Default)]
struct Cache {
    records: Option<Arc<Records>>,
    /// Bumped by every change: a listing that raced one is not kept.
    generation: u64,
    /// containerd's image events are being followed.
    following: bool,
}

impl Images {
    pub fn new(
        ctd: Containerd,
        puller: Arc<Puller>,
        snapshotter: String,
        containerd_root: &std::path::Path,
    ) -> Self {
        let snapshotter_root =
            containerd_root.join(format!("io.containerd.snapshotter.v1.{snapshotter}"));
        Images {
            ctd,
            puller,
            snapshotter,
            snapshotter_root,
            cache: Default::default(),
            configs: Default::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the kept records: the images changed.
    pub fn changed(&self) {
        let mut cache = self.cache();
        cache.records = None;
        cache.generation += 1;
    }

    /// Pulls `spec` (see [`Puller::pull`]); the kept records go.
    pub async fn pull(
        &self,
        spec: &str,
        auth: oci_client::secrets::RegistryAuth,
    ) -> Result<String> {
        let pulled = self.puller.pull(spec, auth).await;
        self.changed();
        if pulled.is_ok() && self.cache().following {
            // An image status follows most pulls (the kubelet's, crictl's): list now,
            // while the pull's own image event has usually been seen, so it is kept.
            // (Without the events followed nothing is kept, so nothing is listed.)
            let _ = self.records().await;
        }
        pulled
    }

    /// Follows containerd's image events for Gantry's namespace, so listings can be
    /// kept between changes; reconnects when containerd restarts (nothing is kept
    /// while the events are not followed).
    pub fn spawn_event_follower(self: &Arc<Self>) {
        let images = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let filter = format!("namespace=={},topic~=\"^/images/\"", images.ctd.namespace());
                let subscribed = images
                    .ctd
                    .events()
                    .subscribe(containerd_client::services::v1::SubscribeRequest {
                        filters: vec![filter],
                    })
                    .await;
                match subscribed {
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        images.changed();
                        images.cache().following = true;
                        while let Ok(Some(_)) = stream.message().await {
                            images.changed();
                        }
                        images.cache().following = false;
                        images.changed();
                    }
                    Err(s) => {
                        tracing::debug!(error = %s.message(), "subscribe to containerd's image events")
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        });
    }

    /// containerd's image records of Gantry, grouped by image ID.
    async fn records(&self) -> Result<Arc<Records>> {
        let generation = {
            let cache = self.cache();
            if let Some(records) = cache.records.as_ref().filter(|_| cache.following) {
                return Ok(Arc::clone(records));
            }
            cache.generation
        };
        let records = Arc::new(self.list_records().await?);
        let mut cache = self.cache();
        if cache.following && cache.generation == generation {
            cache.records = Some(Arc::clone(&records));
        }
        Ok(records)
    }

    async fn list_records(&self) -> Result<Records> {
        let images = self
            .ctd
            .images()
            .list(self.ctd.req(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(|s| CriError::containerd("list images", s))?
            .into_inner()
            .images;
        let mut by_id: BTreeMap<String, Vec<CtdImage>> = BTreeMap::new();
        for img in images {
            if let Some(id) = img.labels.get(LABEL_IMAGE_ID).cloned() {
                by_id.entry(id).or_default().push(img);
            }
        }
        Ok(by_id)
    }

    pub async fn list(&self, filter: Option<&api::ImageSpec>) -> Result<Vec<api::Image>> {
        let by_id = self.records().await?;
        let wanted = match filter.map(|f| f.image.as_str()).filter(|s| !s.is_empty()) {
            Some(spec) => match resolve(&by_id, spec) {
                Some(id) => Some(id),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        Ok(by_id
            .iter()
            .filter(|(id, _)| wanted.as_deref().is_none_or(|w| w == id.as_str()))
            .map(|(id, records)| to_cri_image(id, records))
            .collect())
    }

    /// The image `spec` names (by ID, tag, digest or a short name), if present.
    pub async fn status(
        &self,
        spec: &str,
        verbose: bool,
    ) -> Result<(Option<api::Image>, HashMap<String, String>)> {
        let by_id = self.records().await?;
        let Some(id) = resolve(&by_id, spec) else {
            return Ok((None, HashMap::new()));
        };
        let records = &by_id[&id];
        let image = to_cri_image(&id, records);
        let mut info = HashMap::new();
        if verbose {
            let config = self.config(&id).await?;
            let chain = records[0]
                .labels
                .get(LABEL_CHAIN_ID)
                .cloned()
                .unwrap_or_default();
            let v = serde_json::json!({ "chainID": chain, "imageSpec": config });
            info.insert("info".to_string(), v.to_string());
        }
        Ok((Some(image), info))
    }

    /// The local image a container is created from: NotFound when it was not pulled.
    pub async fn for_container(&self, spec: &str) -> Result<LocalImage> {
        let by_id = self.records().await?;
        let Some(id) = resolve(&by_id, spec) else {
            return Err(CriError::NotFound(format!(
                "image {spec:?} not found: pull it first"
            )));
        };
        let records = &by_id[&id];
        let chain_id = records[0]
            .labels
            .get(LABEL_CHAIN_ID)
            .cloned()
            .unwrap_or_default();
        let config = self.config(&id).await?;
        let image = to_cri_image(&id, records);
        Ok(LocalImage {
            id,
            chain_id,
            config,
            repo_digest: image.repo_digests.first().cloned().unwrap_or_default(),
        })
    }

    /// The config of image `id`, parsed. A config is named by its digest and never
    /// changes, so the parsed ones are kept (up to KEPT_CONFIGS, then they start over).
    async fn config(&self, id: &str) -> Result<serde_json::Value> {
        if let Some(c) = self.configs().get(id) {
            return Ok(c.clone());
        }
        let raw = content::read_all(&self.ctd, id).await?;
        let config: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| CriError::Internal(format!("parse image config {id}: {e}")))?;
        let mut configs = self.configs();
        if configs.len() >= KEPT_CONFIGS {
            configs.clear();
        }
        configs.insert(id.to_string(), config.clone());
        Ok(config)
    }

    fn configs(&self) -> std::sync::MutexGuard<'_, HashMap<String, serde_json::Value>> {
        self.configs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes every name of the image `spec` resolves to. Removing an image that is not
    /// there succeeds, as the CRI asks.
    pub async fn remove(&self, spec: &str) -> Result<()> {
        let by_id = self.records().await?;
        let Some(id) = resolve(&by_id, spec) else {
            return Ok(());
        };
        let records = &by_id[&id];
        self.changed();
        for (i, rec) in records.iter().enumerate() {
            // The last delete is synchronous: content and snapshots are gone on return.
            let sync = i + 1 == records.len();
            match self
                .ctd
                .images()
                .delete(self.ctd.req(DeleteImageRequest {
                    name: rec.name.clone(),
                    sync,
                    target: None,
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => {
                    return Err(CriError::containerd(
                        format!("remove image {}", rec.name),
                        s,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Bytes and inodes used by the snapshotter, summed over Gantry's snapshots.
    pub async fn fs_usage(&self) -> Result<api::FilesystemUsage> {
        let mut list = self
            .ctd
            .snapshots()
            .list(self.ctd.req(ListSnapshotsRequest {
                snapshotter: self.snapshotter.clone(),
                filters: vec![],
            }))
            .await
            .map_err(|s| CriError::containerd("list snapshots", s))?
            .into_inner();
        let mut names = Vec::new();
        while let Some(page) = list
            .message()
            .await
            .map_err(|s| CriError::containerd("list snapshots", s))?
        {
            names.extend(page.info.into_iter().map(|i| i.name));
        }
        let (mut bytes, mut inodes) = (0u64, 0u64);
        for key in names {
            if let Ok(u) = self
                .ctd
                .snapshots()
                .usage(self.ctd.req(UsageRequest {
                    snapshotter: self.snapshotter.clone(),
                    key,
                }))
                .await
            {
                let u = u.into_inner();
                bytes += u.size.max(0) as u64;
                inodes += u.inodes.max(0) as u64;
            }
        }
        Ok(api::FilesystemUsage {
            timestamp: crate::store::now_ns(),
            fs_id: Some(api::FilesystemIdentifier {
                mountpoint: self.snapshotter_root.display().to_string(),
            }),
            used_bytes: Some(api::UInt64Value { value: bytes }),
            inodes_used: Some(api::UInt64Value { value: inodes }),
        })
    }
}

/// The image ID `spec` refers to: an ID (`sha256:…` or its hex), a full or short
/// name (normalized like docker: `busybox` is docker.io/library/busybox:latest), or a
/// repository digest.
fn resolve(by_id: &BTreeMap<String, Vec<CtdImage>>, spec: &str) -> Option<String> {
    let as_id = if spec.starts_with("sha256:") {
        spec.to_string()
    } else {
        format!("sha256:{spec}")
    };
    if by_id.contains_key(&as_id) {
        return Some(as_id);
    }
    // A unique prefix of an ID, as crictl users type them.
    if spec.len() >= 4 && spec.chars().all(|c| c.is_ascii_hexdigit()) {
        let matches: Vec<&String> = by_id
            .keys()
            .filter(|id| id[7..].starts_with(spec))
            .collect();
        if matches.len() == 1 {
            return Some(matches[0].clone());
        }
    }
    // A name as stored (what the kubelet asks for) matches without parsing it: the
    // reference grammar is a large regex whose matching state costs memory per thread.
    if let Some((id, _)) = by_id
        .iter()
        .find(|(_, recs)| recs.iter().any(|r| r.name == spec))
    {
        return Some(id.clone());
    }
    let name = parse_reference(spec).ok().map(|r| r.whole())?;
    by_id
        .iter()
        .find(|(_, recs)| recs.iter().any(|r| r.name == name))
        .map(|(id, _)| id.clone())
}

fn to_cri_image(id: &str, records: &[CtdImage]) -> api::Image {
    let labels = &records[0].labels;
    let (mut repo_tags, mut repo_digests): (Vec<String>, Vec<String>) = records
        .iter()
        .map(|r| r.name.clone())
        .partition(|n| !n.contains('@'));
    repo_tags.sort();
    repo_digests.sort();
    let user = labels.get(LABEL_USER).cloned().unwrap_or_default();
    let (uid, username) = split_user(&user);
    api::Image {
        id: id.to_string(),
        repo_tags,
        repo_digests,
        size: labels
            .get(LABEL_SIZE)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        uid: uid.map(|value| api::Int64Value { value }),
        username,
        spec: Some(api::ImageSpec {
            image: id.to_string(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// The image config's User as the CRI reports it: a numeric user (before any `:group`)
/// is a uid, anything else a user name; an empty User is uid 0 unset.
fn split_user(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or("");
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, id: &str) -> CtdImage {
        CtdImage {
            name: name.to_string(),
            labels: HashMap::from([(LABEL_IMAGE_ID.to_string(), id.to_string())]),
            ..Default::default()
        }
    }

    #[test]
    fn image_users_split_into_uid_or_name() {
        assert_eq!(split_user("1002"), (Some(1002), String::new()));
        assert_eq!(split_user("1003:1004"), (Some(1003), String::new()));
        assert_eq!(split_user("www-data"), (None, "www-data".to_string()));
        assert_eq!(split_user("www-data:1004"), (None, "www-data".to_string()));
        assert_eq!(split_user(""), (None, String::new()));
    }

    #[test]
    fn specs_resolve_by_id_prefix_short_name_and_digest() {
        let id = format!("sha256:{}", "ab".repeat(32));
        let mut by_id = BTreeMap::new();
        by_id.insert(
            id.clone(),
            vec![
                rec("docker.io/library/busybox:latest", &id),
                rec("docker.io/library/busybox@sha256:00", &id),
            ],
        );
        assert_eq!(resolve(&by_id, &id).as_deref(), Some(id.as_str()));
        assert_eq!(
            resolve(&by_id, &"ab".repeat(32)).as_deref(),
            Some(id.as_str())
        );
        assert_eq!(resolve(&by_id, "abab").as_deref(), Some(id.as_str()));
        assert_eq!(resolve(&by_id, "busybox").as_deref(), Some(id.as_str()));
        // A name as stored matches as it is; another full name does not.
        assert_eq!(
            resolve(&by_id, "docker.io/library/busybox:latest").as_deref(),
            Some(id.as_str())
        );
        assert_eq!(resolve(&by_id, "registry.k8s.io/pause:3.9"), None);
        assert_eq!(resolve(&by_id, "busybox:1.0"), None);
        let img = to_cri_image(&id, &by_id[&id]);
        assert_eq!(img.repo_tags, vec!["docker.io/library/busybox:latest"]);
        assert_eq!(
            img.repo_digests,
            vec!["docker.io/library/busybox@sha256:00"]
        );
    }
}
