//! Image pulls for a container, per its pull policy, with upstream's events and
//! waiting reasons (ErrImagePull, then ImagePullBackOff while the back-off lasts,
//! ErrImageNeverPull).

use std::time::{Duration, Instant};

use gantry_cri::api;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::{go_duration, Worker};
use crate::cluster::Cluster;
use crate::spec::ImageUser;

impl<C: Cluster> Worker<C> {
    /// The user `image_ref` runs as (its config's User), for runAsNonRoot checks and
    /// containers that name no user.
    pub(super) async fn image_user(&self, image_ref: &str) -> Option<ImageUser> {
        let image = self
            .cri
            .images
            .clone()
            .image_status(api::ImageStatusRequest {
                image: Some(api::ImageSpec {
                    image: image_ref.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .ok()?
            .into_inner()
            .image?;
        Some(ImageUser {
            uid: image.uid.map(|u| u.value),
            username: image.username,
        })
    }

    /// The image for `c` per its pull policy; on failure the container waits with
    /// ErrImagePull, then ImagePullBackOff while the back-off lasts.
    pub(super) async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &Container,
        fp: &str,
    ) -> Result<String, Duration> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&image).to_string());
        let spec = api::ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let present = match self
            .cri
            .images
            .clone()
            .image_status(api::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
        {
            Ok(r) => r.into_inner().image.map(|i| i.id),
            Err(e) => {
                self.waiting.insert(
                    c.name.clone(),
                    ("ErrImageInspect".to_string(), e.message().to_string()),
                );
                return Err(Duration::from_secs(5));
            }
        };
        if let Some(id) = present.filter(|_| policy != "Always") {
            self.cluster.event(
                pod,
                Some(fp.to_string()),
                "Normal",
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(id);
        }
        if policy == "Never" {
            let msg =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.waiting.insert(
                c.name.clone(),
                ("ErrImageNeverPull".to_string(), msg.clone()),
            );
            self.cluster.event(
                pod,
                Some(fp.to_string()),
                "Warning",
                "ErrImageNeverPull",
                &msg,
            );
            return Err(Duration::from_secs(10));
        }
        let key = format!("{}/{image}", self.uid);
        if let Some(left) = self.pulls.remaining(&key, Instant::now()) {
            self.waiting.insert(
                c.name.clone(),
                (
                    "ImagePullBackOff".to_string(),
                    format!("Back-off pulling image \"{image}\""),
                ),
            );
            // Announced once per back-off window.
            let window = format!("{key}#{}", self.pulls.failures(&key));
            if self.announced_backoff.insert(window) {
                self.cluster.event(
                    pod,
                    Some(fp.to_string()),
                    "Normal",
                    "BackOff",
                    &format!("Back-off pulling image \"{image}\""),
                );
                self.cluster.event(
                    pod,
                    Some(fp.to_string()),
                    "Warning",
                    "Failed",
                    "Error: ImagePullBackOff",
                );
            }
            return Err(left);
        }
        self.cluster.event(
            pod,
            Some(fp.to_string()),
            "Normal",
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        let started = Instant::now();
        let metrics = crate::metrics::PodMetrics::global();
        metrics.startup.started_pulling(&self.uid, started);
        let auths = self.cluster.pull_credentials(pod, &image).await;
        let mut result = Err(tonic::Status::unknown("no attempt"));
        for auth in auths.into_iter().map(Some).chain(std::iter::once(None)) {
            result = self
                .cri
                .images
                .clone()
                .pull_image(api::PullImageRequest {
                    image: Some(spec.clone()),
                    auth,
                    sandbox_config: None,
                })
                .await;
            if result.is_ok() {
                break;
            }
        }
        metrics.startup.finished_pulling(&self.uid, Instant::now());
        match result {
            Ok(r) => {
                self.pulls.reset(&key);
                let reference = r.into_inner().image_ref;
                let took = started.elapsed();
                self.cluster.event(
                    pod,
                    Some(fp.to_string()),
                    "Normal",
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {} ({} including waiting)",
                        go_duration(took),
                        go_duration(took)
                    ),
                );
                Ok(reference)
            }
            Err(e) => {
                let window = self.pulls.fail(&key, Instant::now());
                let msg = format!("Failed to pull image \"{image}\": {}", e.message());
                self.waiting
                    .insert(c.name.clone(), ("ErrImagePull".to_string(), msg.clone()));
                self.cluster
                    .event(pod, Some(fp.to_string()), "Warning", "Failed", &msg);
                self.cluster.event(
                    pod,
                    Some(fp.to_string()),
                    "Warning",
                    "Failed",
                    "Error: ErrImagePull",
                );
                Err(window)
            }
        }
    }
}

/// Upstream's default pull policy for an image without one (static pods): Always for
/// `:latest` or no tag, else IfNotPresent.
fn default_pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match name.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_as_upstream() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("127.0.0.1:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("127.0.0.1:5000/busybox:1.36"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }
}
