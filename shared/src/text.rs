//! Free text that crosses the trust boundary (agent versions, error texts, progress
//! details, table names): capped in length and with control characters escaped, so it
//! can neither forge a log line nor grow a record without bound.

/// Most bytes of an error text kept from an agent.
pub const MAX_ERROR_LEN: usize = 4096;
/// Most bytes of a short label (version, phase, table name) kept from an agent.
pub const MAX_LABEL_LEN: usize = 128;

/// `s` with control characters escaped (`\n` becomes `\\n`) and cut to at most `max`
/// bytes on a character boundary, marked with how much was cut.
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for (i, c) in s.char_indices() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > max {
            out.push_str(&format!("…({} bytes cut)", s.len() - i));
            return out;
        }
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn newlines_are_escaped_and_long_text_is_cut() {
        assert_eq!(clean("1.0\nINFO forged line", 64), "1.0\\nINFO forged line");
        let long = "é".repeat(10_000);
        let c = clean(&long, 100);
        assert!(c.len() <= 100 + 32 && c.ends_with("bytes cut)"), "{c}");
        assert_eq!(clean("ok", 100), "ok");
    }

    proptest! {
        #[test]
        fn cleaned_text_is_bounded_and_has_no_control_characters(s in ".{0,600}", max in 1usize..300) {
            let c = clean(&s, max);
            prop_assert!(c.len() <= max + 32);
            prop_assert!(!c.chars().any(|ch| ch.is_control()));
        }
    }
}
