//! Query strings read as Go's url.Values, which is how upstream reads the kubelet
//! API's parameters.

/// A query string as Go's url.Values: every key keeps all its values in order; `get`
/// is the first, as `Values.Get` and `Request.FormValue` read it.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Query { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Replaces every value of `key` (upstream rewrites `tail` into `tailLines`).
    pub fn set(&mut self, key: &str, value: Option<&str>) {
        self.pairs.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.pairs.push((key.to_string(), v.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeated_keys_in_order_and_decodes_them() {
        let q = Query::parse(Some("command=sh&command=-c&command=echo+a%20b&tty=1"));
        assert_eq!(q.all("command"), vec!["sh", "-c", "echo a b"]);
        assert_eq!(q.get("tty"), Some("1"));
        assert_eq!(q.get("stdin"), None);
        assert!(Query::parse(None).all("command").is_empty());
    }
}
