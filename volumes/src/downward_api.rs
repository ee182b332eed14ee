//! Downward API files: the bytes a `downwardAPI` volume item holds, as upstream's
//! `downwardapi.CollectData` (pkg/volume/downwardapi), `fieldpath.ExtractFieldPathAsString`
//! and `resource.ExtractResourceValueByContainerNameAndNodeAllocatable`.
//!
//! Pure: the pod and the node's allocatable resources come in, a payload goes out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, Pod, ResourceFieldSelector};
use thiserror::Error;

use crate::atomic_writer::{clean_path, FileProjection, Payload};
use crate::quantity::{ceil_div, Quantity};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DownwardApiError {
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("fieldPath {0:?} does not support subscript")]
    NoSubscript(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("resourceFieldRef {resource} of container {container}: {reason}")]
    BadQuantity {
        resource: String,
        container: String,
        reason: String,
    },
}

/// Renders labels or annotations as upstream's `fieldpath.FormatMap`: one `key="value"` line
/// per entry, keys sorted, values quoted as Go's `%q`, no trailing newline.
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote` for valid UTF-8: the usual backslash escapes, `\xNN` for ASCII
/// controls, `\uNNNN`/`\UNNNNNNNN` for other non-printable runes. Go's `unicode.IsPrint` is
/// approximated by: not a control, not a space other than U+0020, not a common format char.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    let format_char = matches!(c as u32,
        0xad | 0x600..=0x605 | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2064 | 0xfeff);
    !(c.is_control() || c.is_whitespace() || format_char)
}

/// Splits `metadata.labels['key']` into the path and the subscript
/// (upstream `fieldpath.SplitMaybeSubscriptedPath`).
fn split_subscript(field_path: &str) -> Option<(&str, &str)> {
    let inner = field_path.strip_suffix("']")?;
    inner.split_once("['")
}

/// The value of a pod `fieldRef` in a volume (upstream `ExtractFieldPathAsString`):
/// metadata.name, .namespace, .uid, .labels, .annotations, and one label or annotation by
/// subscript (a missing key is an empty file).
pub fn extract_field_path(pod: &Pod, field_path: &str) -> Result<String, DownwardApiError> {
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    if let Some((path, key)) = split_subscript(field_path) {
        return match path {
            "metadata.annotations" => Ok(annotations.get(key).cloned().unwrap_or_default()),
            "metadata.labels" => Ok(labels.get(key).cloned().unwrap_or_default()),
            _ => Err(DownwardApiError::NoSubscript(field_path.into())),
        };
    }
    match field_path {
        "metadata.annotations" => Ok(format_map(annotations)),
        "metadata.labels" => Ok(format_map(labels)),
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        _ => Err(DownwardApiError::UnsupportedFieldPath(field_path.into())),
    }
}

/// Upstream looks in containers, then init containers (`findContainerInPod`).
fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().find(|c| c.name == name).or_else(|| {
        spec.init_containers
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.name == name))
    })
}

/// The value of a `resourceFieldRef` (upstream `ExtractContainerResourceValue`): the
/// container's limit or request divided by the divisor (default `1`) and rounded up; CPU in
/// milli-units, memory, ephemeral storage and hugepages in units. A limit the container does
/// not set is the node's allocatable amount (upstream `MergeContainerResourceLimits`), keyed
/// `cpu`, `memory`, `ephemeral-storage`.
pub fn extract_resource_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, DownwardApiError> {
    let container_name = selector.container_name.clone().unwrap_or_default();
    let container = find_container(pod, &container_name)
        .ok_or_else(|| DownwardApiError::ContainerNotFound(container_name.clone()))?;
    let bad = |reason: String| DownwardApiError::BadQuantity {
        resource: selector.resource.clone(),
        container: container_name.clone(),
        reason,
    };
    let divisor = match &selector.divisor {
        Some(d) => Quantity::parse(&d.0).map_err(|e| bad(e.to_string()))?,
        None => Quantity::parse("1").map_err(|e| bad(e.to_string()))?,
    };
    let divisor = if divisor.is_zero() {
        Quantity::parse("1").map_err(|e| bad(e.to_string()))?
    } else {
        divisor
    };
    let (kind, name) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| DownwardApiError::UnsupportedResource(selector.resource.clone()))?;
    let is_cpu = name == "cpu";
    let supported =
        matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
    if !supported || !matches!(kind, "limits" | "requests") {
        return Err(DownwardApiError::UnsupportedResource(
            selector.resource.clone(),
        ));
    }
    let resources = container.resources.as_ref();
    let list = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        _ => resources.and_then(|r| r.requests.as_ref()),
    };
    let set = list.and_then(|l| l.get(name));
    let set = match set {
        Some(q) => Some(Quantity::parse(&q.0).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    // A zero limit counts as unset (upstream's MergeContainerResourceLimits).
    let set = set.filter(|q| kind != "limits" || !q.is_zero());
    let amount = match set {
        Some(q) => q,
        None if kind == "limits" && !name.starts_with("hugepages-") => {
            match node_allocatable.get(name) {
                Some(q) => *q,
                None => Quantity::parse("0").map_err(|e| bad(e.to_string()))?,
            }
        }
        None => Quantity::parse("0").map_err(|e| bad(e.to_string()))?,
    };
    let value = if is_cpu {
        ceil_div(amount.milli_value(), divisor.milli_value().max(1))
    } else {
        ceil_div(amount.value(), divisor.value().max(1))
    };
    Ok(value.to_string())
}

/// The payload of downward API items (upstream `CollectData`): the item's mode or the
/// volume's default, errors of all items collected, as upstream's aggregate.
pub fn collect_data(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    node_allocatable: &BTreeMap<String, Quantity>,
    default_mode: u32,
) -> Result<Payload, Vec<DownwardApiError>> {
    let mut errors = Vec::new();
    let mut payload = Payload::new();
    for item in items {
        let mode = item.mode.map(|m| m as u32 & 0o7777).unwrap_or(default_mode);
        let data = if let Some(field) = &item.field_ref {
            extract_field_path(pod, &field.field_path)
        } else if let Some(res) = &item.resource_field_ref {
            extract_resource_value(res, pod, node_allocatable)
        } else {
            Ok(String::new())
        };
        match data {
            Ok(d) => {
                payload.insert(
                    clean_path(&item.path),
                    FileProjection {
                        data: d.into_bytes(),
                        mode,
                    },
                );
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(payload)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ObjectFieldSelector, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        let resources = ResourceRequirements {
            limits: Some(
                [("cpu", "1250m"), ("memory", "64Mi")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Q(v.to_string())))
                    .collect(),
            ),
            requests: Some(
                [("cpu", "250m"), ("memory", "32Mi")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Q(v.to_string())))
                    .collect(),
            ),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("1234-abcd".into()),
                labels: Some(
                    [("b", "2"), ("a", "1")]
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect(),
                ),
                annotations: Some(
                    [("note", "say \"hi\"\nbye")]
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "app".into(),
                        resources: Some(resources),
                        ..Default::default()
                    },
                    Container {
                        name: "bare".into(),
                        ..Default::default()
                    },
                    Container {
                        name: "zero".into(),
                        resources: Some(ResourceRequirements {
                            limits: Some([("cpu".to_string(), Q("0".into()))].into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn field_paths_render_as_upstream() {
        let p = pod();
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("metadata.name", Ok("web")),
            ("metadata.namespace", Ok("prod")),
            ("metadata.uid", Ok("1234-abcd")),
            ("metadata.labels", Ok("a=\"1\"\nb=\"2\"")),
            ("metadata.annotations", Ok("note=\"say \\\"hi\\\"\\nbye\"")),
            ("metadata.labels['b']", Ok("2")),
            ("metadata.labels['missing']", Ok("")),
            ("metadata.annotations['note']", Ok("say \"hi\"\nbye")),
            ("spec.nodeName", Err("unsupported fieldPath: spec.nodeName")),
            (
                "metadata.name['x']",
                Err("fieldPath \"metadata.name['x']\" does not support subscript"),
            ),
        ];
        for (path, want) in cases {
            let got = extract_field_path(&p, path).map_err(|e| e.to_string());
            assert_eq!(
                got.as_deref(),
                want.map_err(|e| e.to_string()).as_deref(),
                "{path}"
            );
        }
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        let cases = [
            ("plain", "\"plain\""),
            ("tab\there", "\"tab\\there\""),
            ("nul\0", "\"nul\\x00\""),
            ("é ü", "\"é ü\""),
            ("nbsp\u{a0}", "\"nbsp\\u00a0\""),
            ("back\\slash", "\"back\\\\slash\""),
        ];
        for (input, want) in cases {
            assert_eq!(go_quote(input), want, "{input:?}");
        }
    }

    fn sel(container: &str, resource: &str, divisor: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector {
            container_name: Some(container.into()),
            resource: resource.into(),
            divisor: divisor.map(|d| Q(d.into())),
        }
    }

    #[test]
    fn resource_values_divide_and_round_up() {
        let p = pod();
        let node: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), Quantity::parse("4").unwrap()),
            ("memory".to_string(), Quantity::parse("8Gi").unwrap()),
        ]
        .into_iter()
        .collect();
        // (container, resource, divisor, value or error)
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            ("app", "limits.cpu", None, Ok("2")),
            ("app", "limits.cpu", Some("1m"), Ok("1250")),
            ("app", "requests.cpu", Some("1m"), Ok("250")),
            ("app", "requests.cpu", None, Ok("1")),
            ("app", "limits.memory", None, Ok("67108864")),
            ("app", "limits.memory", Some("1Mi"), Ok("64")),
            ("app", "requests.memory", Some("1Mi"), Ok("32")),
            ("app", "limits.memory", Some("1M"), Ok("68")),
            // No limit: the node's allocatable, as upstream.
            ("bare", "limits.cpu", None, Ok("4")),
            ("bare", "limits.memory", Some("1Gi"), Ok("8")),
            ("bare", "requests.memory", None, Ok("0")),
            // A zero limit counts as none.
            ("zero", "limits.cpu", None, Ok("4")),
            ("nope", "limits.cpu", None, Err("container nope not found")),
            (
                "app",
                "limits.gpu",
                None,
                Err("unsupported container resource : limits.gpu"),
            ),
        ];
        for (c, r, d, want) in cases {
            let got = extract_resource_value(&sel(c, r, *d), &p, &node).map_err(|e| e.to_string());
            assert_eq!(
                got.as_deref(),
                want.map_err(|e| e.to_string()).as_deref(),
                "{c} {r} {d:?}"
            );
        }
    }

    #[test]
    fn collect_data_uses_item_mode_or_default_and_collects_errors() {
        let p = pod();
        let item = |path: &str, field: &str, mode: Option<i32>| DownwardAPIVolumeFile {
            path: path.into(),
            mode,
            field_ref: Some(ObjectFieldSelector {
                field_path: field.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let items = vec![
            item("name", "metadata.name", None),
            item("meta/./labels", "metadata.labels", Some(0o400)),
        ];
        let got = collect_data(&items, &p, &BTreeMap::new(), 0o644).unwrap();
        assert_eq!(got["name"].data, b"web");
        assert_eq!(got["name"].mode, 0o644);
        assert_eq!(got["meta/labels"].mode, 0o400);

        let bad = vec![item("a", "spec.x", None), item("b", "status.y", None)];
        let errs = collect_data(&bad, &p, &BTreeMap::new(), 0o644).unwrap_err();
        assert_eq!(errs.len(), 2);
    }
}
