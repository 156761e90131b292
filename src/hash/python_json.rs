//! Writing a [`Json`] tree exactly as Python's `json.dumps(..., sort_keys=True)` would, so the
//! digest matches Python cachetta's `hash(*args)`: Python's separators, escapes and float
//! repr (shortest round-trip digits).

use std::fmt::Write as _;

use super::Json;

pub(super) fn write_json(out: &mut String, value: &Json) {
    match value {
        Json::Null | Json::Unit => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Int(digits) => out.push_str(digits),
        Json::Float(f) => write_float(out, *f),
        Json::Str(s) => write_str(out, s),
        Json::List(items) => write_list(out, items),
        Json::Object(entries) => {
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, key);
                out.push_str(": ");
                write_json(out, value);
            }
            out.push('}');
        }
    }
}

pub(super) fn write_list(out: &mut String, items: &[Json]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_json(out, item);
    }
    out.push(']');
}

/// A string as `json.dumps` writes it with `ensure_ascii=True`.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").expect("writing to a String cannot fail");
                }
            }
        }
    }
    out.push('"');
}

/// A float as Python's `json.dumps` writes it: `float.__repr__`, plus `NaN`/`Infinity`.
pub(super) fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let (digits, exponent) = shortest_digits(f.abs());
    if f.is_sign_negative() {
        out.push('-');
    }
    if !(-4..16).contains(&exponent) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        write!(out, "e{sign}{:02}", exponent.unsigned_abs()).expect("writing to a String");
    } else if exponent < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.push_str(&digits);
    } else {
        let whole = exponent as usize + 1;
        if digits.len() <= whole {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', whole - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..whole]);
            out.push('.');
            out.push_str(&digits[whole..]);
        }
    }
}

/// The shortest decimal digits that round-trip to `f` (finite, not negative) and the decimal
/// exponent of the first one: 0.0125 is `("125", -2)`.
///
/// Python's repr picks, among the shortest round-tripping strings, the one nearest `f` and
/// breaks exact ties to even; ryu does the same. Rust's own `{:e}` does not always (it writes
/// 1774306205806144.3 for 1774306205806144.25, where Python writes ...144.2).
fn shortest_digits(f: f64) -> (String, i32) {
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(f);
    let (mantissa, shift) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().expect("ryu exponent is an integer")),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{whole}{fraction}");
    let leading_zeros = all.bytes().take_while(|&b| b == b'0').count();
    let digits = all[leading_zeros..].trim_end_matches('0');
    if digits.is_empty() {
        return ("0".to_owned(), 0);
    }
    let exponent = whole.len() as i32 - 1 + shift - leading_zeros as i32;
    (digits.to_owned(), exponent)
}
