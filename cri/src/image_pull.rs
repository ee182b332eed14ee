//! Pulling an image into containerd without its Transfer service (containerd 1.6 has
//! none): resolve the reference through the configured registry hosts, fetch the
//! manifest (choosing linux/amd64 from an index), write config, layers and manifests
//! into the content store with the labels containerd's garbage collector follows,
//! unpack the layers into the snapshotter through the Diff service, and name the image.
//! Everything is written under a lease, so a pull cut short leaves nothing that the
//! garbage collector keeps.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_client::services::v1::{
    snapshots::{
        CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    },
    ApplyRequest, CreateImageRequest, Image, UpdateImageRequest,
};
use containerd_client::types::Descriptor;
use futures::future::{BoxFuture, FutureExt, Shared};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::containerd::Containerd;
use crate::content;
use crate::error::{CriError, Result};
use crate::hosts::{Endpoint, RegistryHosts};

/// Labels Gantry puts on its image records, so listing images needs no blob reads.
pub const LABEL_IMAGE_ID: &str = "io.gantry.image.id";
pub const LABEL_SIZE: &str = "io.gantry.image.size";
pub const LABEL_USER: &str = "io.gantry.image.user";
pub const LABEL_MANIFEST: &str = "io.gantry.image.manifest";
pub const LABEL_CHAIN_ID: &str = "io.gantry.image.chain-id";

const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPTED: &[&str] = &[
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
];

type PullFuture = Shared<BoxFuture<'static, Result<String>>>;

/// Pulls images; concurrent pulls of one reference share one download.
pub struct Puller {
    ctd: Containerd,
    hosts: RegistryHosts,
    snapshotter: String,
    inflight: Mutex<HashMap<String, PullFuture>>,
    /// Registry clients by protocol and credentials: building one (its TLS roots and
    /// connection pool) costs more than pulling a manifest of an image already here,
    /// and a kept client reuses its connections and tokens. One per credentials, so a
    /// token fetched with one pod's pull secret never serves another's.
    clients: std::sync::Mutex<HashMap<(bool, String), oci_client::Client>>,
}

/// A reference as the user wrote it and normalized (docker.io/library/busybox:latest).
pub fn parse_reference(image: &str) -> Result<Reference> {
    if image.trim().is_empty() {
        return Err(CriError::InvalidArgument(
            "image reference is empty".to_string(),
        ));
    }
    crate::reference::parse(image)
        .map_err(|e| CriError::InvalidArgument(format!("parse image reference {image:?}: {e}")))
}

impl Puller {
    pub fn new(ctd: Containerd, hosts: RegistryHosts, snapshotter: String) -> Arc<Self> {
        Arc::new(Puller {
            ctd,
            hosts,
            snapshotter,
            inflight: Mutex::new(HashMap::new()),
            clients: Default::default(),
        })
    }

    /// Pulls `image` and returns its image ID (`sha256:` + config digest).
    pub async fn pull(self: &Arc<Self>, image: &str, auth: RegistryAuth) -> Result<String> {
        let reference = parse_reference(image)?;
        let key = format!("{}\u{0}{}", reference.whole(), auth_key(&auth));
        let fut = {
            let mut inflight = self.inflight.lock().await;
            if let Some(f) = inflight.get(&key) {
                f.clone()
            } else {
                let me = Arc::clone(self);
                // A task of its own: a caller that gives up (crictl's timeout) must not
                // cut short a pull that others wait on, nor skip its lease cleanup.
                let task = tokio::spawn(async move { me.pull_uncached(reference, auth).await });
                let f = async move {
                    task.await.unwrap_or_else(|e| {
                        Err(CriError::Internal(format!("pull task failed: {e}")))
                    })
                }
                .boxed()
                .shared();
                inflight.insert(key.clone(), f.clone());
                f
            }
        };
        let result = fut.await;
        self.inflight.lock().await.remove(&key);
        result
    }

    async fn pull_uncached(&self, reference: Reference, auth: RegistryAuth) -> Result<String> {
        let name = reference.whole();
        let endpoints = self.hosts.endpoints(reference.registry())?;
        let mut failures = Vec::new();
        let mut all_not_found = true;
        for ep in &endpoints {
            if reference.digest().is_none() && !ep.resolve {
                continue;
            }
            match self.pull_from(&reference, ep, &auth).await {
                Ok(id) => return Ok(id),
                Err(e) => {
                    all_not_found &= e.is_not_found();
                    failures.push(format!("{}: {e}", ep.host));
                }
            }
        }
        let msg = format!("pull image {name:?}: {}", failures.join("; "));
        Err(if all_not_found && !failures.is_empty() {
            CriError::NotFound(msg)
        } else {
            CriError::Unavailable(msg)
        })
    }

    fn client(&self, plain_http: bool, auth: &RegistryAuth) -> oci_client::Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry((plain_http, auth_key(auth)))
            .or_insert_with(|| {
                // The registry client takes the process's crypto provider; the agent
                // installs ring at start, a CRI used as a library may not have.
                if rustls::crypto::CryptoProvider::get_default().is_none() {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                }
                oci_client::Client::new(ClientConfig {
                    protocol: if plain_http {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    ..Default::default()
                })
            })
            .clone()
    }

    async fn pull_from(
        &self,
        reference: &Reference,
        ep: &Endpoint,
        auth: &RegistryAuth,
    ) -> Result<String> {
        let client = self.client(ep.plain_http, auth);
        let remote = match reference.digest() {
            Some(d) => Reference::with_digest(
                ep.host.clone(),
                reference.repository().to_string(),
                d.to_string(),
            ),
            None => Reference::with_tag(
                ep.host.clone(),
                reference.repository().to_string(),
                reference.tag().unwrap_or("latest").to_string(),
            ),
        };
        let (top_bytes, top_digest) = client
            .pull_manifest_raw(&remote, auth, ACCEPTED)
            .await
            .map_err(|e| registry_error("fetch manifest", e))?;
        verify_digest(&top_bytes, &top_digest)?;
        let top: Value = serde_json::from_slice(&top_bytes)
            .map_err(|e| CriError::Internal(format!("parse manifest {top_digest}: {e}")))?;
        let top_type = media_type(&top);

        let (manifest_bytes, manifest_digest) = if top.get("manifests").is_some() {
            let chosen = pick_linux_amd64(&top).ok_or_else(|| {
                CriError::NotFound(format!("index {top_digest} has no linux/amd64 image"))
            })?;
            let by_digest = Reference::with_digest(
                ep.host.clone(),
                reference.repository().to_string(),
                chosen.clone(),
            );
            let (bytes, digest) = client
                .pull_manifest_raw(&by_digest, auth, ACCEPTED)
                .await
                .map_err(|e| registry_error("fetch platform manifest", e))?;
            verify_digest(&bytes, &digest)?;
            (bytes, digest)
        } else {
            (top_bytes.clone(), top_digest.clone())
        };
        let manifest: Value = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| CriError::Internal(format!("parse manifest {manifest_digest}: {e}")))?;
        let config_desc = descriptor(&manifest["config"]).ok_or_else(|| {
            CriError::Internal(format!("manifest {manifest_digest} has no config"))
        })?;
        let layers: Vec<Descriptor> = manifest["layers"]
            .as_array()
            .map(|a| a.iter().filter_map(descriptor).collect())
            .unwrap_or_default();

        let lease = self.ctd.create_lease("gantry-pull").await?;
        let result = self
            .store(
                &client,
                &remote,
                &lease.id,
                (&top_bytes, &top_digest, &top_type),
                (&manifest_bytes, &manifest_digest),
                config_desc,
                layers,
                reference,
            )
            .await;
        self.ctd.delete_lease(lease).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        client: &oci_client::Client,
        remote: &Reference,
        lease: &str,
        top: (&[u8], &str, &str),
        manifest: (&[u8], &str),
        config_desc: Descriptor,
        layers: Vec<Descriptor>,
        reference: &Reference,
    ) -> Result<String> {
        let ctd = &self.ctd;
        // The config is small: fetch it whole, it says how to unpack.
        let mut config_bytes = Vec::new();
        client
            .pull_blob(remote, &oci_desc(&config_desc), &mut config_bytes)
            .await
            .map_err(|e| registry_error("fetch image config", e))?;
        verify_digest(&config_bytes, &config_desc.digest)?;
        let config: Value = serde_json::from_slice(&config_bytes).map_err(|e| {
            CriError::Internal(format!("parse image config {}: {e}", config_desc.digest))
        })?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(CriError::Internal(format!(
                "image config {} lists {} layers, manifest {} has {}",
                config_desc.digest,
                diff_ids.len(),
                manifest.1,
                layers.len()
            )));
        }

        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            let labels =
                HashMap::from([("containerd.io/uncompressed".to_string(), diff_id.clone())]);
            if content::info(ctd, &layer.digest).await?.is_some() {
                content::add_labels(ctd, &layer.digest, labels).await?;
                continue;
            }
            let stream = client
                .pull_blob_stream(remote, &oci_desc(layer))
                .await
                .map_err(|e| registry_error(&format!("fetch layer {}", layer.digest), e))?;
            content::write(ctd, lease, &layer.digest, layer.size, labels, stream.stream).await?;
        }

        let chain_id = self.unpack(lease, &layers, &diff_ids).await?;

        let snapshot_label = format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter);
        let config_labels = HashMap::from([(snapshot_label, chain_id.clone())]);
        write_bytes(ctd, lease, &config_desc.digest, config_bytes, config_labels).await?;

        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config_desc.digest.clone(),
        )]);
        for (i, l) in layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        write_bytes(ctd, lease, manifest.1, manifest.0.to_vec(), manifest_labels).await?;
        if top.1 != manifest.1 {
            let index_labels = HashMap::from([(
                "containerd.io/gc.ref.content.m.0".to_string(),
                manifest.1.to_string(),
            )]);
            write_bytes(ctd, lease, top.1, top.0.to_vec(), index_labels).await?;
        }

        let image_id = config_desc.digest.clone();
        let size: i64 = config_desc.size + layers.iter().map(|l| l.size).sum::<i64>();
        let user = config["config"]["User"].as_str().unwrap_or("").to_string();
        let labels = HashMap::from([
            (LABEL_IMAGE_ID.to_string(), image_id.clone()),
            (LABEL_SIZE.to_string(), size.to_string()),
            (LABEL_USER.to_string(), user),
            (LABEL_MANIFEST.to_string(), manifest.1.to_string()),
            (LABEL_CHAIN_ID.to_string(), chain_id),
        ]);
        let target = Descriptor {
            media_type: top.2.to_string(),
            digest: top.1.to_string(),
            size: top.0.len() as i64,
            annotations: HashMap::new(),
        };
        // As containerd's CRI plugin: the name as pulled and its repository digest.
        let repo = format!("{}/{}", reference.registry(), reference.repository());
        let mut names = vec![format!("{repo}@{}", top.1)];
        if reference.digest().is_none() {
            names.insert(0, format!("{repo}:{}", reference.tag().unwrap_or("latest")));
        }
        for name in names {
            self.put_image(Image {
                name,
                labels: labels.clone(),
                target: Some(target.clone()),
                ..Default::default()
            })
            .await?;
        }
        Ok(image_id)
    }

    /// Applies each layer on its parent snapshot; returns the top chain ID. Snapshots
    /// already present (shared layers) are reused.
    async fn unpack(
        &self,
        lease: &str,
        layers: &[Descriptor],
        diff_ids: &[String],
    ) -> Result<String> {
        let ctd = &self.ctd;
        let mut parent = String::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let chain = if parent.is_empty() {
                diff_id.clone()
            } else {
                format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))
                )
            };
            let stat = ctd
                .snapshots()
                .stat(ctd.req(StatSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: chain.clone(),
                }))
                .await;
            if stat.is_ok() {
                parent = chain;
                continue;
            }
            let key = format!("extract-{}-{chain}", unique_suffix());
            let mounts = ctd
                .snapshots()
                .prepare(ctd.req_leased(
                    PrepareSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: HashMap::new(),
                    },
                    Some(lease),
                ))
                .await
                .map_err(|s| {
                    CriError::containerd(format!("prepare snapshot for layer {}", layer.digest), s)
                })?
                .into_inner()
                .mounts;
            let applied = ctd
                .diff()
                .apply(ctd.req_leased(
                    ApplyRequest {
                        diff: Some(layer.clone()),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    Some(lease),
                ))
                .await;
            let outcome = match applied {
                Ok(r) => {
                    let got = r.into_inner().applied.map(|d| d.digest).unwrap_or_default();
                    if &got != diff_id {
                        Err(CriError::Internal(format!(
                            "layer {} unpacked to {got}, but the image config says {diff_id}",
                            layer.digest
                        )))
                    } else {
                        ctd.snapshots()
                            .commit(ctd.req_leased(
                                CommitSnapshotRequest {
                                    snapshotter: self.snapshotter.clone(),
                                    name: chain.clone(),
                                    key: key.clone(),
                                    labels: HashMap::new(),
                                },
                                Some(lease),
                            ))
                            .await
                            .map(|_| ())
                            .or_else(|s| {
                                // Unpacked concurrently by another pull: theirs is as good.
                                if s.code() == tonic::Code::AlreadyExists {
                                    Ok(())
                                } else {
                                    Err(CriError::containerd(format!("commit snapshot {chain}"), s))
                                }
                            })
                    }
                }
                Err(s) => Err(CriError::containerd(
                    format!("apply layer {}", layer.digest),
                    s,
                )),
            };
            // A successful commit consumed the active snapshot; after a failure, or a
            // commit that lost a race, it is still there. Removing it is one call either
            // way (NotFound when already gone).
            let _ = ctd
                .snapshots()
                .remove(ctd.req(RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key,
                }))
                .await;
            outcome?;
            parent = chain;
        }
        Ok(parent)
    }

    async fn put_image(&self, image: Image) -> Result<()> {
        let ctd = &self.ctd;
        let name = image.name.clone();
        match ctd
            .images()
            .create(ctd.req(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => ctd
                .images()
                .update(ctd.req(UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .map(|_| ())
                .map_err(|s| CriError::containerd(format!("update image {name}"), s)),
            Err(s) => Err(CriError::containerd(format!("create image {name}"), s)),
        }
    }
}

fn auth_key(auth: &RegistryAuth) -> String {
    match auth {
        RegistryAuth::Anonymous => String::new(),
        RegistryAuth::Basic(u, p) => {
            hex::encode(Sha256::digest(format!("basic:{u}:{p}").as_bytes()))
        }
        RegistryAuth::Bearer(t) => hex::encode(Sha256::digest(format!("bearer:{t}").as_bytes())),
    }
}

fn registry_error(what: &str, e: oci_client::errors::OciDistributionError) -> CriError {
    use oci_client::errors::OciDistributionError as E;
    let msg = format!("{what}: {e}");
    match &e {
        E::ImageManifestNotFoundError(_) => CriError::NotFound(msg),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            }) =>
        {
            CriError::NotFound(msg)
        }
        E::ServerError { code: 404, .. } => CriError::NotFound(msg),
        _ => CriError::Unavailable(msg),
    }
}

fn verify_digest(bytes: &[u8], digest: &str) -> Result<()> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    if actual != digest {
        return Err(CriError::Internal(format!(
            "content {digest} hashes to {actual}"
        )));
    }
    Ok(())
}

fn media_type(doc: &Value) -> String {
    match doc["mediaType"].as_str() {
        Some(t) => t.to_string(),
        None if doc.get("manifests").is_some() => MEDIA_OCI_INDEX.to_string(),
        None => MEDIA_OCI_MANIFEST.to_string(),
    }
}

/// The digest of the linux/amd64 manifest of an index.
pub fn pick_linux_amd64(index: &Value) -> Option<String> {
    index["manifests"].as_array()?.iter().find_map(|m| {
        let p = &m["platform"];
        (p["os"] == "linux" && p["architecture"] == "amd64")
            .then(|| m["digest"].as_str().map(str::to_string))?
    })
}

fn descriptor(v: &Value) -> Option<Descriptor> {
    Some(Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or("").to_string(),
        digest: v["digest"].as_str()?.to_string(),
        size: v["size"].as_i64()?,
        annotations: HashMap::new(),
    })
}

fn oci_desc(d: &Descriptor) -> oci_client::manifest::OciDescriptor {
    oci_client::manifest::OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        ..Default::default()
    }
}

/// Stores a small blob held in memory (a manifest, an index, an image config).
async fn write_bytes(
    ctd: &Containerd,
    lease: &str,
    digest: &str,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<()> {
    let size = data.len() as i64;
    let stream =
        futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(data))]);
    content::write(ctd, lease, digest, size, labels, stream).await
}

pub(crate) fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", std::process::id())
}

/// An RFC 3339 time `secs` from now, as containerd's gc.expire label wants.
pub(crate) fn expire_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86400;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_resolves_to_the_linux_amd64_manifest() {
        let index: Value = serde_json::json!({"manifests": [
            {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        assert_eq!(pick_linux_amd64(&index).as_deref(), Some("sha256:amd"));
        let none: Value = serde_json::json!({"manifests": [{"digest": "sha256:w", "platform": {"os": "windows", "architecture": "amd64"}}]});
        assert_eq!(pick_linux_amd64(&none), None);
    }

    #[test]
    fn references_normalize_like_docker() {
        assert_eq!(
            parse_reference("busybox").expect("valid").whole(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            parse_reference("registry.k8s.io/pause:3.9")
                .expect("valid")
                .whole(),
            "registry.k8s.io/pause:3.9"
        );
        assert!(matches!(
            parse_reference("Not A Reference"),
            Err(CriError::InvalidArgument(_))
        ));
        assert!(matches!(
            parse_reference(""),
            Err(CriError::InvalidArgument(_))
        ));
    }

    #[test]
    fn gc_expiry_is_rfc3339() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
        assert!(expire_in(0).ends_with('Z'));
    }

    #[test]
    fn digest_mismatch_is_refused() {
        assert!(verify_digest(
            b"abc",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        .is_ok());
        assert!(verify_digest(
            b"abd",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        .is_err());
    }
}
