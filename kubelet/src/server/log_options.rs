//! The query of /containerLogs, decoded as upstream decodes a v1.PodLogOptions from
//! url.Values and then validated as ValidatePodLogOptions validates it. A value that
//! does not decode is a 400 naming the parameter; values that decode but are not
//! allowed are a 422, as upstream.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::query::Query;
use super::reply::ApiError;

/// Which of the container's streams to return (PodLogOptions.stream).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamFilter {
    #[default]
    All,
    Stdout,
    Stderr,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<OffsetDateTime>,
    pub stream: StreamFilter,
}

impl LogOptions {
    pub fn from_query(query: &Query) -> Result<LogOptions, ApiError> {
        let mut q = query.clone();
        // Upstream keeps the old `tail` parameter working: it becomes tailLines, and
        // "all" means no limit.
        if let Some(tail) = query.get("tail").filter(|t| !t.is_empty()) {
            let tail = tail.to_string();
            q.set("tailLines", (tail != "all").then_some(tail.as_str()));
        }
        let opts = LogOptions {
            follow: flag(&q, "follow"),
            previous: flag(&q, "previous"),
            timestamps: flag(&q, "timestamps"),
            tail_lines: int(&q, "tailLines")?,
            limit_bytes: int(&q, "limitBytes")?,
            since_seconds: int(&q, "sinceSeconds")?,
            since_time: since_time(&q)?,
            stream: stream(&q)?,
        };
        opts.validate()?;
        Ok(opts)
    }

    fn validate(&self) -> Result<(), ApiError> {
        let invalid = |m: &str| Err(ApiError::Unprocessable(format!("invalid log options: {m}")));
        if self.tail_lines.is_some_and(|n| n < 0) {
            return invalid("tailLines: must be greater than or equal to 0");
        }
        if self.limit_bytes.is_some_and(|n| n < 1) {
            return invalid("limitBytes: must be greater than 0");
        }
        if self.since_seconds.is_some() && self.since_time.is_some() {
            return invalid("at most one of `sinceTime` or `sinceSeconds` may be specified");
        }
        if self.since_seconds.is_some_and(|n| n < 1) {
            return invalid("sinceSeconds: must be greater than 0");
        }
        if self.tail_lines.is_some() && self.stream != StreamFilter::All {
            return invalid("`tailLines` and specific `stream` are mutually exclusive for now");
        }
        Ok(())
    }

    /// Entries older than this are skipped: the later of now - sinceSeconds and
    /// sinceTime, as upstream's NewLogOptions computes it.
    pub fn since(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let from_seconds = self.since_seconds.map(|s| now - time::Duration::seconds(s));
        match (from_seconds, self.since_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Upstream's Convert_Slice_string_To_bool: absent is false; present is true unless
/// it is "0" or "false" (any case), so `?follow` alone follows.
fn flag(q: &Query, key: &str) -> bool {
    match q.get(key) {
        None => false,
        Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

fn int(q: &Query, key: &str) -> Result<Option<i64>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "unable to decode query parameter {key}={v:?}: not an integer"
                ))
            })
        })
        .transpose()
}

/// metav1.Time's query form: RFC 3339; empty means unset.
fn since_time(q: &Query) -> Result<Option<OffsetDateTime>, ApiError> {
    match q.get("sinceTime") {
        None | Some("") | Some("null") => Ok(None),
        Some(v) => OffsetDateTime::parse(v, &Rfc3339).map(Some).map_err(|e| {
            ApiError::BadRequest(format!(
                "unable to decode query parameter sinceTime={v:?}: not an RFC 3339 time: {e}"
            ))
        }),
    }
}

fn stream(q: &Query) -> Result<StreamFilter, ApiError> {
    match q.get("stream") {
        None | Some("") | Some("All") => Ok(StreamFilter::All),
        Some("Stdout") => Ok(StreamFilter::Stdout),
        Some("Stderr") => Ok(StreamFilter::Stderr),
        Some(v) => Err(ApiError::Unprocessable(format!(
            "invalid log options: stream: unsupported value {v:?}: supported values: \"All\", \"Stderr\", \"Stdout\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn parse(q: &str) -> Result<LogOptions, ApiError> {
        LogOptions::from_query(&Query::parse(Some(q)))
    }

    #[test]
    fn every_option_decodes() {
        let o = parse(
            "follow=true&previous=1&timestamps=True&tailLines=10&limitBytes=500&sinceTime=2024-05-01T10:00:00.5Z",
        )
        .unwrap();
        assert!(o.follow && o.previous && o.timestamps);
        assert_eq!(o.tail_lines, Some(10));
        assert_eq!(o.limit_bytes, Some(500));
        assert_eq!(
            o.since_time.unwrap().unix_timestamp_nanos(),
            1_714_557_600_500_000_000
        );
        assert_eq!(parse("").unwrap(), LogOptions::default());
    }

    #[test]
    fn booleans_are_true_unless_zero_or_false() {
        assert!(parse("follow").unwrap().follow);
        assert!(!parse("follow=0").unwrap().follow);
        assert!(!parse("follow=FALSE").unwrap().follow);
    }

    #[test]
    fn a_value_that_does_not_decode_is_a_400_naming_the_parameter() {
        for (q, name) in [
            ("tailLines=abc", "tailLines"),
            ("limitBytes=1.5", "limitBytes"),
            ("sinceSeconds=", "sinceSeconds"),
            ("sinceTime=yesterday", "sinceTime"),
        ] {
            let e = parse(q).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{q}");
            assert!(e.to_string().contains(name), "{q}: {e}");
        }
    }

    #[test]
    fn values_upstream_rejects_are_a_422() {
        for q in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceSeconds=5&sinceTime=2024-05-01T10:00:00Z",
            "stream=Stdout&tailLines=2",
            "stream=both",
        ] {
            assert_eq!(
                parse(q).unwrap_err().status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{q}"
            );
        }
    }

    #[test]
    fn the_old_tail_parameter_still_works() {
        assert_eq!(parse("tail=3").unwrap().tail_lines, Some(3));
        assert_eq!(parse("tail=all&tailLines=3").unwrap().tail_lines, None);
    }

    #[test]
    fn since_is_the_later_of_seconds_and_time() {
        let now = OffsetDateTime::from_unix_timestamp(1000).unwrap();
        let o = LogOptions {
            since_seconds: Some(100),
            ..Default::default()
        };
        assert_eq!(o.since(now).unwrap().unix_timestamp(), 900);
        assert_eq!(LogOptions::default().since(now), None);
    }
}
