//! `$(VAR)` expansion with Kubernetes semantics (as in
//! `k8s.io/kubernetes/third_party/forked/golang/expansion`): `$$` is an escaped
//! `$`, an unknown `$(VAR)` is left as written, an unclosed `$(` is kept.

/// Expands `$(NAME)` in `input` with `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let (text, advance) = read_reference(&input[cursor + 1..], &lookup);
            out.push_str(&text);
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// Reads what follows a `$`: returns the replacement and how many bytes were consumed.
fn read_reference(rest: &str, lookup: &impl Fn(&str) -> Option<String>) -> (String, usize) {
    match rest.as_bytes()[0] {
        b'$' => ("$".to_string(), 1),
        b'(' => match rest[1..].find(')') {
            Some(end) => {
                let name = &rest[1..1 + end];
                let value = lookup(name).unwrap_or_else(|| format!("$({name})"));
                (value, end + 2)
            }
            None => ("$(".to_string(), 1),
        },
        _ => {
            let c = rest.chars().next().unwrap_or_default();
            (format!("${c}"), c.len_utf8())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn kubernetes_expansion_semantics() {
        let cases = [
            ("$(A)", "alpha"),
            ("x-$(A)-y", "x-alpha-y"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$alpha"),
            ("$$$$(A)", "$$(A)"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("a$", "a$"),
            ("$(EMPTY)x", "x"),
            ("$()", "$()"),
            ("ünï$(A)ç$ö", "ünïalphaç$ö"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, look), want, "input {input:?}");
        }
    }
}
