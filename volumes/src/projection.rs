//! Payloads of configMap, secret, downwardAPI and projected volumes: which files, with which
//! bytes and modes, as upstream's `configmap.MakePayload`, `secret.MakePayload`,
//! `downwardapi.CollectData` and the projected plugin's `collectData`.
//!
//! Pure: the caller fetches the objects a volume refers to (absent = not found) and, for
//! `serviceAccountToken` sources, requests the tokens; these functions only decide what to
//! write. The [`AtomicWriter`](crate::AtomicWriter) writes it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, DownwardAPIVolumeSource, KeyToPath, Pod,
    ProjectedVolumeSource, Secret, SecretVolumeSource,
};
use thiserror::Error;

use crate::atomic_writer::{FileProjection, Payload};
use crate::downward_api::{self, DownwardApiError};
use crate::quantity::Quantity;

/// Upstream's default `defaultMode` of configMap, secret, downwardAPI and projected volumes.
pub const DEFAULT_MODE: u32 = 0o644;

/// Upstream writes a projected service account token 0600 when the pod has an fsUser or
/// fsGroup, relying on the fsGroup ownership pass to make it 0640.
pub const TOKEN_MODE_WITH_FS_OWNER: u32 = 0o600;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProjectionError {
    // The messages are those the upstream kubelet reports in FailedMount events.
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKey(String),
    #[error("references non-existent secret key: {0}")]
    SecretKey(String),
    #[error("{0}")]
    DownwardApi(#[from] DownwardApiError),
    #[error("service account token for path {0:?} was not provided")]
    TokenMissing(String),
    #[error("projected volume source at index {0} is not supported (only configMap, secret, downwardAPI, serviceAccountToken)")]
    UnsupportedSource(usize),
    /// Several errors, rendered as upstream's `utilerrors.NewAggregate`.
    #[error("{}", aggregate_message(.0))]
    Aggregate(Vec<ProjectionError>),
}

/// `[a, b]` for several errors, the message alone for one (upstream aggregate format).
fn aggregate_message(errors: &[ProjectionError]) -> String {
    let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    match msgs.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", msgs.join(", ")),
    }
}

fn aggregate(mut errors: Vec<ProjectionError>) -> ProjectionError {
    if errors.len() == 1 {
        errors.remove(0)
    } else {
        ProjectionError::Aggregate(errors)
    }
}

fn mode_or(mode: Option<i32>, default: u32) -> u32 {
    mode.map(|m| m as u32 & 0o7777).unwrap_or(default)
}

/// Keys to files: with no `items` every key becomes a file named after it; with `items`
/// only those keys, at their paths, with their modes. A missing key is an error unless the
/// source is optional, in which case it is skipped.
fn key_to_path_payload(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    missing: impl Fn(&str) -> ProjectionError,
) -> Result<Payload, ProjectionError> {
    let mut payload = Payload::new();
    match items {
        None | Some([]) => {
            for (key, bytes) in data {
                payload.insert(
                    key.clone(),
                    FileProjection {
                        data: bytes.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(bytes) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing(&item.key));
                };
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: bytes.clone(),
                        mode: mode_or(item.mode, default_mode),
                    },
                );
            }
        }
    }
    Ok(payload)
}

/// A configMap's keys, `data` then `binaryData` (upstream gives `data` precedence when a
/// key is in both, which validation forbids anyway).
fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    for (k, v) in cm.data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// The payload of a configMap projection of `name` (shared by the volume and the projected
/// source). An optional missing configMap is empty.
fn config_map_payload_of(
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    config_map: Option<&ConfigMap>,
    default_mode: u32,
) -> Result<Payload, ProjectionError> {
    let data = match config_map {
        Some(cm) => config_map_data(cm),
        None if optional => BTreeMap::new(),
        None => return Err(ProjectionError::ConfigMapNotFound(name.into())),
    };
    key_to_path_payload(&data, items, default_mode, optional, |k| {
        ProjectionError::ConfigMapKey(k.into())
    })
}

fn secret_payload_of(
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    secret: Option<&Secret>,
    default_mode: u32,
) -> Result<Payload, ProjectionError> {
    let data = match secret {
        Some(s) => secret_data(s),
        None if optional => BTreeMap::new(),
        None => return Err(ProjectionError::SecretNotFound(name.into())),
    };
    key_to_path_payload(&data, items, default_mode, optional, |k| {
        ProjectionError::SecretKey(k.into())
    })
}

/// The files of a `configMap` volume; `config_map` is the object, `None` if not found.
pub fn config_map_payload(
    source: &ConfigMapVolumeSource,
    config_map: Option<&ConfigMap>,
) -> Result<Payload, ProjectionError> {
    config_map_payload_of(
        &source.name,
        source.items.as_deref(),
        source.optional.unwrap_or(false),
        config_map,
        mode_or(source.default_mode, DEFAULT_MODE),
    )
}

/// The files of a `secret` volume; `secret` is the object, `None` if not found.
pub fn secret_payload(
    source: &SecretVolumeSource,
    secret: Option<&Secret>,
) -> Result<Payload, ProjectionError> {
    secret_payload_of(
        source.secret_name.as_deref().unwrap_or_default(),
        source.items.as_deref(),
        source.optional.unwrap_or(false),
        secret,
        mode_or(source.default_mode, DEFAULT_MODE),
    )
}

/// The files of a `downwardAPI` volume for `pod`. `node_allocatable` stands in for limits a
/// container does not set (keys `cpu`, `memory`, `ephemeral-storage`).
pub fn downward_api_payload(
    source: &DownwardAPIVolumeSource,
    pod: &Pod,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<Payload, ProjectionError> {
    downward_api::collect_data(
        source.items.as_deref().unwrap_or_default(),
        pod,
        node_allocatable,
        mode_or(source.default_mode, DEFAULT_MODE),
    )
    .map_err(|errs| aggregate(errs.into_iter().map(ProjectionError::from).collect()))
}

/// What a projected volume's sources refer to, fetched by the caller.
#[derive(Debug, Clone, Copy)]
pub struct ProjectedInputs<'a> {
    pub pod: &'a Pod,
    /// ConfigMaps by name, in the pod's namespace; a missing one is "not found".
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    /// Secrets by name, in the pod's namespace.
    pub secrets: &'a BTreeMap<String, Secret>,
    /// Service account tokens by the `path` of their `serviceAccountToken` source.
    pub tokens: &'a BTreeMap<String, Vec<u8>>,
    pub node_allocatable: &'a BTreeMap<String, Quantity>,
    /// The pod's `securityContext.fsGroup` (or an fsUser), which changes the token mode.
    pub fs_user: Option<i64>,
    pub fs_group: Option<i64>,
}

/// The files of a `projected` volume: every source's files merged, later sources winning a
/// path, all errors reported together (upstream `collectData`).
pub fn projected_payload(
    source: &ProjectedVolumeSource,
    inputs: &ProjectedInputs<'_>,
) -> Result<Payload, ProjectionError> {
    let default_mode = mode_or(source.default_mode, DEFAULT_MODE);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for (index, proj) in source.sources.iter().flatten().enumerate() {
        let part = if let Some(s) = &proj.secret {
            secret_payload_of(
                &s.name,
                s.items.as_deref(),
                s.optional.unwrap_or(false),
                inputs.secrets.get(&s.name),
                default_mode,
            )
        } else if let Some(c) = &proj.config_map {
            config_map_payload_of(
                &c.name,
                c.items.as_deref(),
                c.optional.unwrap_or(false),
                inputs.config_maps.get(&c.name),
                default_mode,
            )
        } else if let Some(d) = &proj.downward_api {
            downward_api::collect_data(
                d.items.as_deref().unwrap_or_default(),
                inputs.pod,
                inputs.node_allocatable,
                default_mode,
            )
            .map_err(|errs| aggregate(errs.into_iter().map(ProjectionError::from).collect()))
        } else if let Some(t) = &proj.service_account_token {
            match inputs.tokens.get(&t.path) {
                Some(token) => {
                    let mode = if inputs.fs_user.is_some() || inputs.fs_group.is_some() {
                        TOKEN_MODE_WITH_FS_OWNER
                    } else {
                        default_mode
                    };
                    let mut p = Payload::new();
                    p.insert(
                        t.path.clone(),
                        FileProjection {
                            data: token.clone(),
                            mode,
                        },
                    );
                    Ok(p)
                }
                None => Err(ProjectionError::TokenMissing(t.path.clone())),
            }
        } else {
            Err(ProjectionError::UnsupportedSource(index))
        };
        match part {
            Ok(p) => payload.extend(p),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(payload)
    } else {
        Err(aggregate(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, DownwardAPIProjection, DownwardAPIVolumeFile, ObjectFieldSelector,
        SecretProjection, ServiceAccountTokenProjection, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn cm(pairs: &[(&str, &str)], binary: &[(&str, &[u8])]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("cfg".into()),
                ..Default::default()
            },
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            binary_data: Some(
                binary
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn ktp(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
            ..Default::default()
        }
    }

    fn files(p: &Payload) -> Vec<(String, String, u32)> {
        p.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    String::from_utf8_lossy(&v.data).into_owned(),
                    v.mode,
                )
            })
            .collect()
    }

    fn owned(v: &[(&str, &str, u32)]) -> Vec<(String, String, u32)> {
        v.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
            .collect()
    }

    #[test]
    fn config_map_volume_cases() {
        let object = cm(&[("a", "1"), ("b", "2")], &[("bin", b"\x01")]);
        struct Case {
            name: &'static str,
            items: Option<Vec<KeyToPath>>,
            default_mode: Option<i32>,
            optional: Option<bool>,
            present: bool,
            want: Result<Vec<(&'static str, &'static str, u32)>, &'static str>,
        }
        let cases = vec![
            Case {
                name: "all keys with the upstream default mode",
                items: None,
                default_mode: None,
                optional: None,
                present: true,
                want: Ok(vec![
                    ("a", "1", 0o644),
                    ("b", "2", 0o644),
                    ("bin", "\x01", 0o644),
                ]),
            },
            Case {
                name: "items pick keys, paths and modes",
                items: Some(vec![ktp("a", "x/y", Some(0o400)), ktp("b", "b", None)]),
                default_mode: Some(0o600),
                optional: None,
                present: true,
                want: Ok(vec![("b", "2", 0o600), ("x/y", "1", 0o400)]),
            },
            Case {
                name: "missing key",
                items: Some(vec![ktp("k", "k", None)]),
                default_mode: None,
                optional: None,
                present: true,
                want: Err("configmap references non-existent config key: k"),
            },
            Case {
                name: "missing key of an optional configMap is skipped",
                items: Some(vec![ktp("k", "k", None), ktp("a", "a", None)]),
                default_mode: None,
                optional: Some(true),
                present: true,
                want: Ok(vec![("a", "1", 0o644)]),
            },
            Case {
                name: "not found",
                items: None,
                default_mode: None,
                optional: Some(false),
                present: false,
                want: Err("configmap \"cfg\" not found"),
            },
            Case {
                name: "optional not found is empty",
                items: None,
                default_mode: None,
                optional: Some(true),
                present: false,
                want: Ok(vec![]),
            },
        ];
        for c in cases {
            let source = ConfigMapVolumeSource {
                name: "cfg".into(),
                items: c.items,
                default_mode: c.default_mode,
                optional: c.optional,
                ..Default::default()
            };
            let got = config_map_payload(&source, c.present.then_some(&object))
                .map(|p| files(&p))
                .map_err(|e| e.to_string());
            let want = c.want.map(|v| owned(&v)).map_err(|e| e.to_string());
            assert_eq!(got, want, "{}", c.name);
        }
    }

    #[test]
    fn secret_volume_errors_name_the_secret_and_key() {
        let secret = Secret {
            data: Some([("tls.crt".to_string(), ByteString(b"CERT".to_vec()))].into()),
            ..Default::default()
        };
        let source = |items: Option<Vec<KeyToPath>>| SecretVolumeSource {
            secret_name: Some("tls".into()),
            items,
            default_mode: Some(0o400),
            ..Default::default()
        };
        let p = secret_payload(&source(None), Some(&secret)).unwrap();
        assert_eq!(files(&p), owned(&[("tls.crt", "CERT", 0o400)]));
        let e = secret_payload(&source(Some(vec![ktp("key", "k", None)])), Some(&secret));
        assert_eq!(
            e.unwrap_err().to_string(),
            "references non-existent secret key: key"
        );
        let e = secret_payload(&source(None), None).unwrap_err().to_string();
        assert_eq!(e, "secret \"tls\" not found");
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn projected(sources: Vec<VolumeProjection>) -> ProjectedVolumeSource {
        ProjectedVolumeSource {
            sources: Some(sources),
            ..Default::default()
        }
    }

    #[test]
    fn projected_merges_sources_and_token_mode_follows_fs_group() {
        let config_maps: BTreeMap<String, ConfigMap> =
            [("cfg".to_string(), cm(&[("a", "1")], &[]))].into();
        let secrets = BTreeMap::new();
        let tokens: BTreeMap<String, Vec<u8>> = [("token".to_string(), b"jwt".to_vec())].into();
        let node = BTreeMap::new();
        let source = projected(vec![
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "token".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: "cfg".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                downward_api: Some(DownwardAPIProjection {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "name".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            },
        ]);
        let pod = pod();
        let mut inputs = ProjectedInputs {
            pod: &pod,
            config_maps: &config_maps,
            secrets: &secrets,
            tokens: &tokens,
            node_allocatable: &node,
            fs_user: None,
            fs_group: None,
        };
        let p = projected_payload(&source, &inputs).unwrap();
        assert_eq!(
            files(&p),
            owned(&[
                ("a", "1", 0o644),
                ("name", "p", 0o644),
                ("token", "jwt", 0o644)
            ])
        );
        inputs.fs_group = Some(2000);
        let p = projected_payload(&source, &inputs).unwrap();
        assert_eq!(p["token"].mode, 0o600);
        assert_eq!(p["a"].mode, 0o644);
    }

    #[test]
    fn projected_reports_every_failing_source() {
        let empty_cm = BTreeMap::new();
        let empty_s = BTreeMap::new();
        let tokens = BTreeMap::new();
        let node = BTreeMap::new();
        let pod = pod();
        let inputs = ProjectedInputs {
            pod: &pod,
            config_maps: &empty_cm,
            secrets: &empty_s,
            tokens: &tokens,
            node_allocatable: &node,
            fs_user: None,
            fs_group: None,
        };
        let source = projected(vec![
            VolumeProjection {
                secret: Some(SecretProjection {
                    name: "s".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: "opt".into(),
                    optional: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: "c".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        let e = projected_payload(&source, &inputs).unwrap_err().to_string();
        assert_eq!(e, "[secret \"s\" not found, configmap \"c\" not found]");
    }
}
