//! Quantities as kubectl and the API print them, read back in tests: CPU ("250m", "2")
//! in millicores, memory ("64Mi", "24591456Ki", "1Gi", "1024") in bytes.

use anyhow::{Context, Result};

/// "250m" or "2" → millicores.
pub fn milli(q: &str) -> Result<i64> {
    let n = |s: &str| {
        s.parse::<i64>()
            .with_context(|| format!("CPU quantity {q:?}"))
    };
    match q.strip_suffix('m') {
        Some(m) => n(m),
        None => Ok(n(q)? * 1000),
    }
}

/// "64Mi", "24591456Ki", "1Gi" or plain bytes → bytes.
pub fn bytes(q: &str) -> Result<i64> {
    let n = |s: &str| {
        s.parse::<i64>()
            .with_context(|| format!("memory quantity {q:?}"))
    };
    for (suffix, scale) in [("Ki", 1i64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(v) = q.strip_suffix(suffix) {
            return Ok(n(v)? * scale);
        }
    }
    n(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_quantities_read_back() {
        assert_eq!(milli("250m").unwrap(), 250);
        assert_eq!(milli("2").unwrap(), 2000);
        assert_eq!(bytes("64Mi").unwrap(), 64 << 20);
        assert_eq!(bytes("3Ki").unwrap(), 3072);
        assert_eq!(bytes("1024").unwrap(), 1024);
        assert!(bytes("1Ti").is_err());
    }
}
