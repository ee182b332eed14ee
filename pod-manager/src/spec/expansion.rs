//! `$(VAR)` references in env values, commands and args, expanded as upstream's
//! third_party/forked/golang/expansion does: a defined reference is replaced, `$$` is
//! an escaped `$` (so `$$(VAR)` yields the literal `$(VAR)`), and an undefined or
//! unterminated reference is left as written.

/// Expands the references in `input`; `lookup` gives a variable's value, or None when
/// it is not defined.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    // Bytes before `checkpoint` are already in `out`. Every byte compared below is
    // ASCII, so each slice boundary falls on a char boundary.
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor + 1 < bytes.len() {
        if bytes[cursor] != b'$' {
            cursor += 1;
            continue;
        }
        out.push_str(&input[checkpoint..cursor]);
        match bytes[cursor + 1] {
            b'$' => {
                out.push('$');
                cursor += 2;
            }
            b'(' => match input[cursor + 2..].find(')') {
                Some(len) => {
                    let name = &input[cursor + 2..cursor + 2 + len];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    cursor += 2 + len + 1;
                }
                None => {
                    // Unterminated: upstream keeps `$(` and goes on after it.
                    out.push_str("$(");
                    cursor += 2;
                }
            },
            _ => {
                // A `$` that opens nothing is kept; the next char is copied as it is.
                out.push('$');
                cursor += 1;
            }
        }
        checkpoint = cursor;
    }
    out.push_str(&input[checkpoint..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<&'static str> {
        match name {
            "VAR_A" => Some("A"),
            "VAR_B" => Some("B"),
            "EMPTY" => Some(""),
            "NESTED" => Some("$(VAR_A)"),
            _ => None,
        }
    }

    #[test]
    fn references_expand_as_upstream_expansion_does() {
        let cases = [
            ("plain text", "plain text"),
            ("$(VAR_A)", "A"),
            ("x$(VAR_A)y$(VAR_B)z", "xAyBz"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("$(EMPTY)", ""),
            // Undefined references stay as written.
            ("$(UNDEFINED)", "$(UNDEFINED)"),
            ("a $(UNDEFINED) b", "a $(UNDEFINED) b"),
            // $$ escapes the operator.
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$$", "$"),
            // A lone or trailing $ is literal.
            ("$", "$"),
            ("abc$", "abc$"),
            ("$VAR_A", "$VAR_A"),
            ("$ (VAR_A)", "$ (VAR_A)"),
            // Unterminated references are kept, and what follows is still read.
            ("$(VAR_A", "$(VAR_A"),
            ("$(VAR_A $(VAR_B", "$(VAR_A $(VAR_B"),
            // A name runs to the first ')': upstream does not nest references.
            ("$($(VAR_B)", "$($(VAR_B)"),
            // Empty name: looked up like any other, undefined.
            ("$()", "$()"),
            // Values are not expanded again.
            ("$(NESTED)", "$(VAR_A)"),
            // Non-ASCII text around references survives.
            ("é$(VAR_A)ü$ø", "éAü$ø"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, vars), want, "{input:?}");
        }
    }
}
