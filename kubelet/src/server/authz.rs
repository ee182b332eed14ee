//! What a request may do: upstream's nodeAuthorizerAttributesGetter turns the method
//! and path into attributes on the Node object (resource `nodes`, name = this node,
//! a subresource per API area), and the webhook authorizer asks the API server with a
//! SubjectAccessReview. Allowed answers are cached 5 minutes, denied ones 30 seconds
//! (KubeletConfiguration's cacheAuthorizedTTL / cacheUnauthorizedTTL defaults).

use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::authn::User;
use super::reply::ApiError;
use super::ttl_cache::TtlCache;

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// The authorization attributes of one request. `subresources` are tried in order and
/// the request is allowed if any is: with fine-grained kubelet authorization (upstream
/// KubeletFineGrainedAuthz, on by default since 1.33) /pods and /healthz first ask for
/// their own subresource, then fall back to `proxy`, which has always covered them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresources: Vec<&'static str>,
}

/// Upstream's isSubpath: `path` itself or anything below it.
fn is_subpath(path: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    path == base || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

/// The attributes upstream derives from a request to the kubelet API.
pub fn request_attributes(method: &Method, path: &str) -> Attributes {
    // Upstream maps POST/GET/PUT/PATCH/DELETE; HEAD reads like GET. Any other method
    // has no verb, which no policy grants.
    let verb = match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let mut subresources = Vec::new();
    if is_subpath(path, "/pods") || is_subpath(path, "/runningpods/") {
        subresources.push("pods");
    } else if is_subpath(path, "/healthz") {
        subresources.push("healthz");
    } else if is_subpath(path, "/configz") {
        subresources.push("configz");
    } else if is_subpath(path, "/statusz") {
        subresources.push("statusz");
    }
    subresources.push(if is_subpath(path, "/stats/") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs/") {
        // "log" to match the other log subresources (pods/log), as upstream.
        "log"
    } else if is_subpath(path, "/spec/") {
        "spec"
    } else if is_subpath(path, "/checkpoint/") {
        "checkpoint"
    } else {
        "proxy"
    });
    Attributes { verb, subresources }
}

pub struct Authorizer {
    kube: kube::Client,
    node_name: String,
    /// authorization.mode == Webhook; otherwise AlwaysAllow.
    webhook: bool,
    decisions: TtlCache<String, bool>,
}

impl Authorizer {
    pub fn new(kube: kube::Client, node_name: String, webhook: bool) -> Self {
        Authorizer {
            kube,
            node_name,
            webhook,
            decisions: TtlCache::new(),
        }
    }

    /// Ok when `user` may make a request with `attrs`; otherwise the 403 (or, when the
    /// API server could not answer, the 500) upstream's auth filter writes.
    pub async fn authorize(&self, user: &User, attrs: &Attributes) -> Result<(), ApiError> {
        if !self.webhook {
            return Ok(());
        }
        for sub in &attrs.subresources {
            match self.allowed(user, attrs.verb, sub).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(user = %user.name, verb = attrs.verb, subresource = sub, error = %e, "authorization error");
                    return Err(ApiError::Internal(format!(
                        "Authorization error (user={}, verb={}, resource=nodes, subresource={sub})",
                        user.name, attrs.verb
                    )));
                }
            }
        }
        Err(ApiError::Forbidden(forbidden_message(user, attrs)))
    }

    async fn allowed(&self, user: &User, verb: &str, subresource: &str) -> Result<bool, String> {
        let key = format!(
            "{:?}|{}|{subresource}",
            (&user.name, &user.uid, &user.groups, &user.extra),
            verb
        );
        let now = Instant::now();
        if let Some(allowed) = self.decisions.get(&key, now) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.to_string()),
                    name: Some(self.node_name.clone()),
                    namespace: Some(String::new()),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.kube.clone());
        let done =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| "SubjectAccessReview timed out".to_string())?
                .map_err(|e| format!("SubjectAccessReview: {e}"))?;
        let allowed = done.status.as_ref().is_some_and(|s| s.allowed);
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        self.decisions.insert(key, allowed, ttl, now);
        Ok(allowed)
    }
}

/// Upstream's message, subresources printed as Go prints a []string.
fn forbidden_message(user: &User, attrs: &Attributes) -> String {
    format!(
        "Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[{}])\n",
        user.name,
        attrs.verb,
        attrs.subresources.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, path: &str) -> (&'static str, Vec<&'static str>) {
        let a = request_attributes(&method, path);
        (a.verb, a.subresources)
    }

    #[test]
    fn paths_map_to_upstream_subresources() {
        let cases: &[(&str, &[&str])] = &[
            ("/stats/summary", &["stats"]),
            ("/stats", &["stats"]),
            ("/metrics", &["metrics"]),
            ("/metrics/cadvisor", &["metrics"]),
            ("/metrics/resource", &["metrics"]),
            ("/logs/syslog", &["log"]),
            ("/logs/", &["log"]),
            ("/spec/", &["spec"]),
            ("/checkpoint/ns/p/c", &["checkpoint"]),
            ("/pods", &["pods", "proxy"]),
            ("/pods/", &["pods", "proxy"]),
            ("/runningpods/", &["pods", "proxy"]),
            ("/healthz", &["healthz", "proxy"]),
            ("/healthz/ping", &["healthz", "proxy"]),
            ("/configz", &["configz", "proxy"]),
            ("/exec/ns/p/c", &["proxy"]),
            ("/attach/ns/p/c", &["proxy"]),
            ("/portForward/ns/p", &["proxy"]),
            ("/containerLogs/ns/p/c", &["proxy"]),
            ("/run/ns/p/c", &["proxy"]),
            ("/", &["proxy"]),
            // Prefixes that are not path segments do not count.
            ("/statsx", &["proxy"]),
            ("/metricsfoo", &["proxy"]),
            ("/podsx", &["proxy"]),
        ];
        for (path, want) in cases {
            assert_eq!(attrs(Method::GET, path).1, *want, "{path}");
        }
    }

    #[test]
    fn methods_map_to_api_verbs() {
        assert_eq!(attrs(Method::GET, "/pods").0, "get");
        assert_eq!(attrs(Method::HEAD, "/pods").0, "get");
        assert_eq!(attrs(Method::POST, "/exec/a/b/c").0, "create");
        assert_eq!(attrs(Method::PUT, "/x").0, "update");
        assert_eq!(attrs(Method::PATCH, "/x").0, "patch");
        assert_eq!(attrs(Method::DELETE, "/x").0, "delete");
        assert_eq!(attrs(Method::OPTIONS, "/x").0, "");
    }

    #[test]
    fn forbidden_names_user_verb_and_every_subresource_tried() {
        let user = User {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec![],
            extra: Default::default(),
        };
        let msg = forbidden_message(&user, &request_attributes(&Method::GET, "/pods"));
        assert_eq!(
            msg,
            "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource(s)=[pods proxy])\n"
        );
    }

    #[tokio::test]
    async fn always_allow_without_the_webhook() {
        let a = Authorizer::new(super::super::tests::unreachable_kube(), "n".into(), false);
        let user = User {
            name: "x".into(),
            uid: String::new(),
            groups: vec![],
            extra: Default::default(),
        };
        a.authorize(&user, &request_attributes(&Method::POST, "/exec/a/b/c"))
            .await
            .unwrap();
    }
}
