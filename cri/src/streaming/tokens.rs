//! The request cache behind streaming URLs, with upstream's rules
//! (kubelet/pkg/cri/streaming/request_cache.go): a CRI call stores its request under a
//! random token; the token is good for one connection and for one minute; at most 1000
//! are outstanding, so a client that asks for URLs and never uses them cannot grow the
//! cache without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::api;
use crate::error::CriError;

/// How long a token may wait for its connection (upstream `cacheTTL`).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How many tokens may be outstanding at once (upstream `maxInFlight`).
pub const MAX_IN_FLIGHT: usize = 1000;
/// Random bytes per token: 96 bits, base64url-encoded to 16 characters.
const TOKEN_BYTES: usize = 12;

/// A request waiting for its streaming connection.
#[derive(Clone, Debug, PartialEq)]
pub enum PendingRequest {
    Exec(api::ExecRequest),
    Attach(api::AttachRequest),
    PortForward(api::PortForwardRequest),
}

impl PendingRequest {
    /// The URL path segment this request is served under.
    pub fn endpoint(&self) -> &'static str {
        match self {
            PendingRequest::Exec(_) => "exec",
            PendingRequest::Attach(_) => "attach",
            PendingRequest::PortForward(_) => "portforward",
        }
    }
}

struct Entry {
    request: PendingRequest,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Tokens in insertion order (= expiry order, the TTL being fixed); may name tokens
    /// already consumed, which `gc` skips.
    order: VecDeque<String>,
}

/// Single-use, expiring tokens for pending streaming requests.
#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<Inner>,
}

impl TokenCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `request` and returns its token.
    pub fn insert(&self, request: PendingRequest) -> Result<String, CriError> {
        self.insert_at(request, Instant::now())
    }

    /// Takes the request stored under `token`, if it is there and has not expired. A
    /// token is gone after this call whatever it returns.
    pub fn consume(&self, token: &str) -> Option<PendingRequest> {
        self.consume_at(token, Instant::now())
    }

    /// Number of outstanding tokens (expired ones included until the next insert).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way
        // that matters (worst case a stale order entry), so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn insert_at(
        &self,
        request: PendingRequest,
        now: Instant,
    ) -> Result<String, CriError> {
        let mut inner = self.lock();
        gc(&mut inner, now);
        if inner.entries.len() >= MAX_IN_FLIGHT {
            // Upstream answers ResourceExhausted; CriError's closest code is Unavailable
            // (retryable once tokens expire or are used).
            return Err(CriError::Unavailable(format!(
                "streaming {}: maximum number of in-flight requests ({MAX_IN_FLIGHT}) exceeded",
                request.endpoint()
            )));
        }
        let token = loop {
            let token = random_token();
            if !inner.entries.contains_key(&token) {
                break token;
            }
        };
        inner.order.push_back(token.clone());
        inner.entries.insert(
            token.clone(),
            Entry {
                request,
                expires: now + TOKEN_TTL,
            },
        );
        Ok(token)
    }

    pub(crate) fn consume_at(&self, token: &str, now: Instant) -> Option<PendingRequest> {
        let entry = self.lock().entries.remove(token)?;
        (now <= entry.expires).then_some(entry.request)
    }
}

/// Drops expired tokens from the front of the queue.
fn gc(inner: &mut Inner, now: Instant) {
    while let Some(token) = inner.order.front() {
        match inner.entries.get(token) {
            Some(entry) if entry.expires >= now => return,
            Some(_) => {
                inner.entries.remove(token);
            }
            None => {}
        }
        inner.order.pop_front();
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::fill(&mut bytes[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> PendingRequest {
        PendingRequest::Exec(api::ExecRequest {
            container_id: "c1".into(),
            cmd: vec!["sh".into()],
            stdout: true,
            ..Default::default()
        })
    }

    #[test]
    fn token_is_single_use() {
        let cache = TokenCache::new();
        let token = cache.insert(exec()).unwrap();
        assert_eq!(cache.consume(&token), Some(exec()));
        assert_eq!(cache.consume(&token), None);
    }

    #[test]
    fn unknown_token_is_not_found() {
        let cache = TokenCache::new();
        cache.insert(exec()).unwrap();
        assert_eq!(cache.consume("nope"), None);
    }

    #[test]
    fn token_expires_after_one_minute() {
        let cache = TokenCache::new();
        let t0 = Instant::now();
        let fresh = cache.insert_at(exec(), t0).unwrap();
        let stale = cache.insert_at(exec(), t0).unwrap();
        assert!(cache
            .consume_at(&fresh, t0 + Duration::from_secs(59))
            .is_some());
        assert!(cache
            .consume_at(&stale, t0 + Duration::from_secs(61))
            .is_none());
        // An expired token is gone, not merely refused.
        assert!(cache.consume_at(&stale, t0).is_none());
    }

    #[test]
    fn tokens_are_distinct_and_url_safe() {
        let cache = TokenCache::new();
        let a = cache.insert(exec()).unwrap();
        let b = cache.insert(exec()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn in_flight_tokens_are_bounded_until_they_expire() {
        let cache = TokenCache::new();
        let t0 = Instant::now();
        for _ in 0..MAX_IN_FLIGHT {
            cache.insert_at(exec(), t0).unwrap();
        }
        let err = cache.insert_at(exec(), t0).unwrap_err();
        assert!(matches!(err, CriError::Unavailable(_)), "{err:?}");
        // Once the first batch expired, inserting works again and frees the old ones.
        cache
            .insert_at(exec(), t0 + TOKEN_TTL + Duration::from_secs(1))
            .unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn consumed_tokens_free_their_slot() {
        let cache = TokenCache::new();
        let t0 = Instant::now();
        let tokens: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| cache.insert_at(exec(), t0).unwrap())
            .collect();
        assert!(cache.consume_at(&tokens[7], t0).is_some());
        cache.insert_at(exec(), t0).unwrap();
    }
}
