//! Bearer tokens and Webhook authorization against a fake API server that answers
//! TokenReview and SubjectAccessReview: who is let in, the 403 message, the caches.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::super::fake_cri::FakeRuntime;
use super::tls_server::{client_pki, exchange, start};
use super::{backend, pod};

/// The reviews the fake API server answered, as "tokenreview:<token>" and
/// "sar:<user>:<verb>:<subresource>".
type Seen = Arc<Mutex<Vec<String>>>;

/// An API server that authenticates the token "good" as bob (group team) and lets
/// bob use only the given subresources of nodes/node-a.
async fn fake_apiserver(allowed: &'static [&'static str]) -> (kube::Client, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move { Ok::<_, Infallible>(review(req, &log, allowed).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let _ = super::unreachable_kube(); // installs the rustls provider kube needs
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (kube::Client::try_from(config).unwrap(), seen)
}

async fn review(req: Request<Incoming>, log: &Seen, allowed: &[&str]) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let input: Value = serde_json::from_slice(&body).unwrap();
    let spec = input["spec"].clone();
    let answer = if path.ends_with("/tokenreviews") {
        let token = spec["token"].as_str().unwrap_or_default().to_string();
        log.lock().unwrap().push(format!("tokenreview:{token}"));
        let status = if token == "good" {
            json!({"authenticated": true, "user": {"username": "bob", "uid": "b1", "groups": ["team"]}})
        } else {
            json!({"authenticated": false, "error": "invalid token"})
        };
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {}, "spec": spec, "status": status})
    } else {
        let attrs = &spec["resourceAttributes"];
        let user = spec["user"].as_str().unwrap_or_default();
        let sub = attrs["subresource"].as_str().unwrap_or_default();
        let verb = attrs["verb"].as_str().unwrap_or_default();
        log.lock().unwrap().push(format!("sar:{user}:{verb}:{sub}"));
        let allowed = user == "bob"
            && attrs["resource"] == "nodes"
            && attrs["name"] == "node-a"
            && attrs["version"] == "v1"
            && spec["groups"]
                .as_array()
                .is_some_and(|g| g.contains(&json!("system:authenticated")))
            && allowed.contains(&sub);
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {}, "spec": spec, "status": {"allowed": allowed}})
    };
    let mut resp = Response::new(Full::new(Bytes::from(answer.to_string())));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

#[tokio::test]
async fn bearer_tokens_are_reviewed_and_requests_authorized_per_subresource() {
    let (kube, seen) = fake_apiserver(&["proxy"]).await;
    let fake = FakeRuntime::default();
    let mut b = backend(&fake, vec![pod("ns", "web", "u1", &["app"])]);
    b.kube = kube;
    let pki = client_pki();
    let server = start(b, &pki, |c| {
        c.webhook_authn = true;
        c.authz_webhook = true;
        c.anonymous = true;
    })
    .await;
    let good = "Authorization: Bearer good\r\n";

    // /pods asks for nodes/pods first, then falls back to nodes/proxy, which bob has.
    let pods = exchange(server.connect(None).await, "GET", "/pods", good).await;
    assert!(pods.starts_with("HTTP/1.1 200"), "{pods}");
    // Stats need nodes/stats.
    let stats = exchange(server.connect(None).await, "GET", "/stats/summary", good).await;
    assert!(stats.starts_with("HTTP/1.1 403"), "{stats}");
    assert!(
        stats.contains("Forbidden (user=bob, verb=get, resource=nodes, subresource(s)=[stats])"),
        "{stats}"
    );
    // A rejected token is a 401 even though anonymous requests are allowed.
    let bad = exchange(
        server.connect(None).await,
        "GET",
        "/pods",
        "Authorization: Bearer bad\r\n",
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 401"), "{bad}");
    // Anonymous: authenticated, then denied by the API server.
    let anon = exchange(server.connect(None).await, "GET", "/healthz", "").await;
    assert!(anon.starts_with("HTTP/1.1 403"), "{anon}");
    assert!(anon.contains("user=system:anonymous"), "{anon}");

    // Answers are cached: the same requests again reach the API server no more.
    let before = seen.lock().unwrap().len();
    let again = exchange(server.connect(None).await, "GET", "/pods", good).await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    let again = exchange(
        server.connect(None).await,
        "GET",
        "/pods",
        "Authorization: Bearer bad\r\n",
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 401"), "{again}");
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "{:?}",
        seen.lock().unwrap()
    );

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[..5],
        [
            "tokenreview:good",
            "sar:bob:get:pods",
            "sar:bob:get:proxy",
            "sar:bob:get:stats",
            "tokenreview:bad",
        ]
    );
    server.shutdown().await;
}
