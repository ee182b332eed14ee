//! Image references (`[domain/]path[:tag][@digest]`), parsed and normalized as Docker's
//! distribution/reference does: `busybox` is `docker.io/library/busybox:latest`.
//!
//! Written here instead of calling oci-spec's `Reference::from_str`: that one matches a
//! single regular expression whose `\w` classes are Unicode-wide, and compiling it
//! allocates about 15 MiB at the first reference the agent sees. The heap keeps much
//! of that resident for the agent's life, for a grammar a few loops check. The result
//! is oci-spec's own `Reference`, and its errors are oci-spec's `ParseError`.

use oci_client::{ParseError, Reference};

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL_REPOSITORY_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// Parses and normalizes `s`.
pub fn parse(s: &str) -> Result<Reference, ParseError> {
    if s.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    // A tag follows the last ':' that comes after the last '/' ("host:5000/repo"
    // has a port, not a tag).
    let after_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[after_slash..].rfind(':') {
        Some(i) => (&rest[..after_slash + i], Some(&rest[after_slash + i + 1..])),
        None => (rest, None),
    };
    if !valid_name(name) || !tag.is_none_or(valid_tag) || !digest.is_none_or(valid_digest_format) {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_MAX {
        return Err(ParseError::NameTooLong);
    }
    if let Some(d) = digest {
        check_digest_length(d)?;
    }
    let (tag, digest) = (tag.map(str::to_string), digest.map(str::to_string));
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d),
        (None, Some(d)) => Reference::with_digest(registry, repository, d),
        (t, None) => Reference::with_tag(
            registry,
            repository,
            t.unwrap_or_else(|| DEFAULT_TAG.to_string()),
        ),
    })
}

/// `[domain/]component(/component)*`: the first part may be a domain only when more
/// parts follow.
fn valid_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let Some(first) = parts.next() else {
        return false;
    };
    let rest: Vec<&str> = parts.collect();
    let first_ok = valid_component(first) || (!rest.is_empty() && valid_domain(first));
    first_ok && rest.iter().all(|p| valid_component(p))
}

/// A path component: lowercase letters and digits in runs joined by one '.', one or
/// two '_', or any number of '-'.
fn valid_component(c: &str) -> bool {
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    c.starts_with(alnum)
        && c.ends_with(alnum)
        && c.split(alnum)
            .all(|sep| matches!(sep, "" | "." | "_" | "__") || sep.bytes().all(|b| b == b'-'))
}

/// `host[:port]`: dot-separated labels of letters, digits and inner '-'.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (ASCII word characters, as Go's `\w`).
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `algorithm:hex`, the algorithm being letter-led parts joined by one of `-_+.`, the
/// hex at least 32 digits.
fn valid_digest_format(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

/// The digest lengths of the algorithms registries use; others are refused.
fn check_digest_length(d: &str) -> Result<(), ParseError> {
    let (algorithm, hex) = d.split_once(':').ok_or(ParseError::DigestInvalidFormat)?;
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ParseError::DigestUnsupported),
    };
    if hex.len() == want {
        Ok(())
    } else {
        Err(ParseError::DigestInvalidLength)
    }
}

/// Docker's normalization: a first part with no '.' or ':' (and not `localhost`) is a
/// Docker Hub path, and single-part Hub names are official images under `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if domain == DOCKER_HUB_LEGACY {
        domain = DOCKER_HUB.to_string();
    }
    if domain == DOCKER_HUB && !path.contains('/') {
        path = format!("{OFFICIAL_REPOSITORY_PREFIX}{path}");
    }
    (domain, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    /// Input, then the registry, repository, tag and digest it normalizes to.
    type Case<'a> = (String, &'a str, &'a str, Option<&'a str>, Option<String>);

    #[test]
    fn references_normalize_as_docker_does() {
        let d256 = format!("sha256:{HEX64}");
        let d512 = format!("sha512:{HEX64}{HEX64}");
        let cases: Vec<Case> = vec![
            (
                "busybox".into(),
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
            ),
            (
                "test.com:tag".into(),
                "docker.io",
                "library/test.com",
                Some("tag"),
                None,
            ),
            (
                "test.com:5000".into(),
                "docker.io",
                "library/test.com",
                Some("5000"),
                None,
            ),
            (
                "test.com/repo:tag".into(),
                "test.com",
                "repo",
                Some("tag"),
                None,
            ),
            (
                "test:5000/repo".into(),
                "test:5000",
                "repo",
                Some("latest"),
                None,
            ),
            (
                "localhost/a/b".into(),
                "localhost",
                "a/b",
                Some("latest"),
                None,
            ),
            (
                "index.docker.io/nginx".into(),
                "docker.io",
                "library/nginx",
                Some("latest"),
                None,
            ),
            (
                "127.0.0.1:5000/e2e/busybox:1.29-2".into(),
                "127.0.0.1:5000",
                "e2e/busybox",
                Some("1.29-2"),
                None,
            ),
            (
                format!("test:5000/repo@{d256}"),
                "test:5000",
                "repo",
                None,
                Some(d256.clone()),
            ),
            (
                format!("test:5000/repo:tag@{d256}"),
                "test:5000",
                "repo",
                Some("tag"),
                Some(d256.clone()),
            ),
            (
                "lowercase:Uppercase".into(),
                "docker.io",
                "library/lowercase",
                Some("Uppercase"),
                None,
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
                "sub-dom1.foo.com",
                "bar/baz/quux",
                Some("some-long-tag"),
                None,
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com".into(),
                "b.gcr.io",
                "test.example.com/my-app",
                Some("test.example.com"),
                None,
            ),
            (
                format!("xn--7o8h.com/myimage:xn--7o8h.com@{d512}"),
                "xn--7o8h.com",
                "myimage",
                Some("xn--7o8h.com"),
                Some(d512.clone()),
            ),
            (
                "foo/foo_bar.com:8080".into(),
                "docker.io",
                "foo/foo_bar.com",
                Some("8080"),
                None,
            ),
            (
                "a__b/c---d:1".into(),
                "docker.io",
                "a__b/c---d",
                Some("1"),
                None,
            ),
        ];
        for (input, registry, repository, tag, digest) in cases {
            let r = parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (r.registry(), r.repository(), r.tag(), r.digest()),
                (registry, repository, tag, digest.as_deref()),
                "{input}"
            );
        }
        assert_eq!(
            parse("busybox").map(|r| r.whole()),
            Ok("docker.io/library/busybox:latest".to_string())
        );
    }

    #[test]
    fn malformed_references_get_oci_specs_errors() {
        let long = "a".repeat(256);
        let cases: Vec<(String, ParseError)> = vec![
            ("".into(), ParseError::NameEmpty),
            (":justtag".into(), ParseError::ReferenceInvalidFormat),
            (
                format!("@sha256:{HEX64}"),
                ParseError::ReferenceInvalidFormat,
            ),
            (
                "repo@sha256:ffffffffffffffffffffffffffffffffff".into(),
                ParseError::DigestInvalidLength,
            ),
            (
                format!("validname@invaliddigest:{HEX64}"),
                ParseError::DigestUnsupported,
            ),
            (
                "repo@sha256:short".into(),
                ParseError::ReferenceInvalidFormat,
            ),
            ("Uppercase:tag".into(), ParseError::ReferenceInvalidFormat),
            (
                "test:5000/Uppercase/lowercase:tag".into(),
                ParseError::ReferenceInvalidFormat,
            ),
            ("Not A Reference".into(), ParseError::ReferenceInvalidFormat),
            ("aa/asdf$$^/aa".into(), ParseError::ReferenceInvalidFormat),
            ("a..b".into(), ParseError::ReferenceInvalidFormat),
            ("a___b".into(), ParseError::ReferenceInvalidFormat),
            ("-a".into(), ParseError::ReferenceInvalidFormat),
            ("a/".into(), ParseError::ReferenceInvalidFormat),
            ("a:".into(), ParseError::ReferenceInvalidFormat),
            ("a:-tag".into(), ParseError::ReferenceInvalidFormat),
            (
                format!("a:{}", "t".repeat(129)),
                ParseError::ReferenceInvalidFormat,
            ),
            ("bad_host-.com/a".into(), ParseError::ReferenceInvalidFormat),
            (long, ParseError::NameTooLong),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input).err(), Some(want), "{input:?}");
        }
    }
}
