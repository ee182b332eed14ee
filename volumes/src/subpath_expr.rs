//! `subPathExpr` expansion: `$(VAR)` references replaced from the container's environment,
//! as upstream's `kubecontainer.ExpandContainerVolumeMounts` with the `third_party/forked/
//! golang/expansion` syntax: `$$` is a literal `$`, an unterminated `$(` and a `$` before
//! anything else stay as written. Unlike env expansion, a missing or empty variable is an
//! error listing every such name.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("missing value for {}", .0.iter().cloned().collect::<Vec<_>>().join(", "))]
pub struct SubpathExprError(pub BTreeSet<String>);

/// The upstream expansion algorithm over any mapping.
pub fn expand(input: &str, mut mapping: impl FnMut(&str) -> String) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest[1..].find(')') {
                    Some(end) => {
                        out.push_str(&mapping(&rest[1..1 + end]));
                        end + 2
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // "$" and the next character, kept as written.
                    let ch = rest.chars().next().map_or(0, char::len_utf8);
                    out.push('$');
                    out.push_str(&rest[..ch]);
                    ch
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

/// Expands a `subPathExpr` from the container's environment (name → value, after the
/// container's own env expansion).
pub fn expand_subpath_expr(
    expr: &str,
    env: &BTreeMap<String, String>,
) -> Result<String, SubpathExprError> {
    let mut missing = BTreeSet::new();
    let expanded = expand(expr, |name| match env.get(name) {
        Some(v) if !v.is_empty() => v.clone(),
        _ => {
            missing.insert(name.to_string());
            String::new()
        }
    });
    if missing.is_empty() {
        Ok(expanded)
    } else {
        Err(SubpathExprError(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_cases() {
        let env: BTreeMap<String, String> = [("POD", "web-0"), ("NS", "prod"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("logs/$(POD)", Ok("logs/web-0")),
            ("$(NS)/$(POD)", Ok("prod/web-0")),
            ("plain", Ok("plain")),
            ("$$(POD)", Ok("$(POD)")),
            ("a$$b", Ok("a$b")),
            ("$(POD", Ok("$(POD")),
            ("$POD", Ok("$POD")),
            ("trailing$", Ok("trailing$")),
            ("é$(POD)é", Ok("éweb-0é")),
            (
                "$(NOPE)/$(EMPTY)/$(POD)",
                Err("missing value for EMPTY, NOPE"),
            ),
        ];
        for (expr, want) in cases {
            let got = expand_subpath_expr(expr, &env).map_err(|e| e.to_string());
            assert_eq!(
                got.as_deref(),
                want.map_err(|e| e.to_string()).as_deref(),
                "{expr}"
            );
        }
    }
}
