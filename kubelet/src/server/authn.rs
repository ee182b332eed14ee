//! Who is calling: upstream's delegating authenticator for the kubelet. A verified
//! client certificate, else a bearer token reviewed by the API server (TokenReview,
//! answers cached for 2 minutes), else anonymous when allowed. A token that is present
//! but rejected is a 401 even when anonymous requests are allowed: upstream's union
//! fails on an authenticator's error before it falls back to anonymous.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use super::tls::CertIdentity;
use super::ttl_cache::TtlCache;

pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// authentication.webhook.cacheTTL's default.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(120);
/// How long a TokenReview may take before the request is refused.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated (or anonymous) user, as authorization sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    fn anonymous() -> User {
        User {
            name: ANONYMOUS_USER.into(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
            extra: BTreeMap::new(),
        }
    }

    /// Upstream's AuthenticatedGroupAdder: every authenticated user is also in
    /// system:authenticated.
    fn with_authenticated_group(mut self) -> User {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }
}

impl From<&CertIdentity> for User {
    fn from(id: &CertIdentity) -> User {
        User {
            name: id.user.clone(),
            uid: String::new(),
            groups: id.groups.clone(),
            extra: BTreeMap::new(),
        }
        .with_authenticated_group()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("no credentials and anonymous requests are disabled")]
    NoCredentials,
    #[error("invalid bearer token")]
    InvalidToken,
    #[error("review the bearer token: {0}")]
    Review(String),
}

pub struct Authenticator {
    kube: kube::Client,
    anonymous: bool,
    webhook: bool,
    /// Token → the user it authenticates as, or None for a token the API server
    /// rejected (upstream caches both answers, not errors).
    tokens: TtlCache<String, Option<User>>,
}

impl Authenticator {
    pub fn new(kube: kube::Client, anonymous: bool, webhook: bool) -> Self {
        Authenticator {
            kube,
            anonymous,
            webhook,
            tokens: TtlCache::new(),
        }
    }

    /// The caller of a request that arrived with `cert` (already verified by the TLS
    /// layer against the client CA) and `headers`.
    pub async fn authenticate(
        &self,
        cert: Option<&CertIdentity>,
        headers: &HeaderMap,
    ) -> Result<User, AuthnError> {
        if let Some(id) = cert {
            return Ok(User::from(id));
        }
        if self.webhook {
            if let Some(token) = bearer_token(headers) {
                return match self.review(token).await? {
                    Some(user) => Ok(user.with_authenticated_group()),
                    None => Err(AuthnError::InvalidToken),
                };
            }
        }
        if self.anonymous {
            return Ok(User::anonymous());
        }
        Err(AuthnError::NoCredentials)
    }

    async fn review(&self, token: &str) -> Result<Option<User>, AuthnError> {
        let now = Instant::now();
        if let Some(answer) = self.tokens.get(&token.to_string(), now) {
            return Ok(answer);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.kube.clone());
        let done =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| AuthnError::Review("timed out".into()))?
                .map_err(|e| AuthnError::Review(e.to_string()))?;
        let answer = user_of_review(&done);
        self.tokens
            .insert(token.to_string(), answer.clone(), TOKEN_CACHE_TTL, now);
        Ok(answer)
    }
}

/// The user an answered TokenReview authenticates, if it does.
fn user_of_review(review: &TokenReview) -> Option<User> {
    let status = review.status.as_ref()?;
    if status.authenticated != Some(true) {
        return None;
    }
    let info = status.user.as_ref()?;
    let name = info.username.clone().unwrap_or_default();
    if name.is_empty() {
        return None;
    }
    Some(User {
        name,
        uid: info.uid.clone().unwrap_or_default(),
        groups: info.groups.clone().unwrap_or_default(),
        extra: info.extra.clone().unwrap_or_default(),
    })
}

/// The token of `Authorization: Bearer <token>`, read as upstream's bearertoken
/// authenticator reads it: the scheme is case-insensitive, an empty token is no token.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn bearer_tokens_are_read_as_upstream_reads_them() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("  Bearer abc  ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn certificate_users_are_in_system_authenticated() {
        let id = CertIdentity {
            user: "system:node:a".into(),
            groups: vec!["system:nodes".into()],
        };
        let u = User::from(&id);
        assert_eq!(u.name, "system:node:a");
        assert_eq!(u.groups, vec!["system:nodes", AUTHENTICATED_GROUP]);
    }

    #[test]
    fn only_an_authenticated_review_yields_a_user() {
        let mut r = TokenReview::default();
        assert_eq!(user_of_review(&r), None);
        r.status = Some(TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:ns:sa".into()),
                uid: Some("u1".into()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                extra: None,
            }),
            ..Default::default()
        });
        let u = user_of_review(&r).unwrap();
        assert_eq!(u.uid, "u1");
        r.status.as_mut().unwrap().authenticated = Some(false);
        assert_eq!(user_of_review(&r), None);
    }

    #[tokio::test]
    async fn without_credentials_anonymous_decides() {
        let kube = super::super::tests::unreachable_kube();
        let open = Authenticator::new(kube.clone(), true, true);
        let u = open.authenticate(None, &HeaderMap::new()).await.unwrap();
        assert_eq!(u.name, ANONYMOUS_USER);
        assert_eq!(u.groups, vec![UNAUTHENTICATED_GROUP]);
        let closed = Authenticator::new(kube, false, true);
        assert!(matches!(
            closed.authenticate(None, &HeaderMap::new()).await,
            Err(AuthnError::NoCredentials)
        ));
    }
}
