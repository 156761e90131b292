//! Rule patterns: `*`, `?`, `**` and `{name}` captures over raw key bytes, compiled once into
//! a `regex::bytes::Regex` (globset has no named captures and reads `{a,b}` as alternation).

use regex::bytes::Regex;

/// A compiled `match` pattern. Glob syntax with `{name}` captures; compiled to a byte regex
/// because keys are raw bytes and globset has neither captures nor our meaning of `{}`.
#[derive(Debug, Clone)]
pub(super) struct Matcher {
    regex: Regex,
    pub(super) names: Vec<String>,
}

/// `CACHETTA_<CAPTURE>` must not shadow the variables every refresh gets.
const RESERVED_CAPTURES: [&str; 4] = ["KEY", "NAME", "ENTRY", "REASON"];

impl Matcher {
    pub(super) fn compile(pattern: &str) -> Result<Matcher, String> {
        if pattern.is_empty() {
            return Err("the pattern is empty".to_owned());
        }
        if pattern.starts_with('/') {
            return Err("patterns are relative to the cache root: remove the leading `/`".into());
        }
        let segments: Vec<&str> = pattern.split('/').collect();
        let mut regex = String::from(r"(?s-u)\A");
        let mut names = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match *segment {
                "" => return Err("empty path segment (`//` or a trailing `/`)".into()),
                "." | ".." => return Err(format!("`{segment}` segments never match a key")),
                // `**` is a whole segment; zero or more directories.
                "**" if last => regex.push_str(".*"),
                "**" => regex.push_str("(?:[^/]+/)*"),
                _ => {
                    compile_segment(segment, &mut regex, &mut names)?;
                    if !last {
                        regex.push('/');
                    }
                }
            }
        }
        regex.push_str(r"\z");
        let regex = Regex::new(&regex).map_err(|e| e.to_string())?;
        Ok(Matcher { regex, names })
    }

    pub(super) fn captures(&self, key: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
        if self.names.is_empty() {
            return self.regex.is_match(key).then(Vec::new);
        }
        let caps = self.regex.captures(key)?;
        Some(
            self.names
                .iter()
                .map(|name| {
                    let value = caps.name(name).map_or(&[][..], |m| m.as_bytes());
                    (name.clone(), value.to_vec())
                })
                .collect(),
        )
    }
}

fn compile_segment(
    segment: &str,
    regex: &mut String,
    names: &mut Vec<String>,
) -> Result<(), String> {
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            // `**` inside a segment (`a**b`) is just two single-segment stars, as in gitignore.
            '*' => regex.push_str("[^/]*"),
            // One character, or one byte where the name is not UTF-8.
            '?' => regex.push_str(r"(?:(?u:[^/])|[\x80-\xFF])"),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err("unclosed `{` (write `\\{` for a literal brace)".into()),
                    }
                }
                check_capture_name(&name, names)?;
                regex.push_str(&format!("(?P<{name}>[^/]+)"));
                names.push(name);
            }
            '}' => return Err("`}` without `{` (write `\\}` for a literal brace)".into()),
            '\\' => match chars.next() {
                Some(c @ ('*' | '?' | '{' | '}' | '\\')) => push_literal(regex, c),
                _ => return Err("`\\` escapes only `*`, `?`, `{`, `}` and `\\`".into()),
            },
            c => push_literal(regex, c),
        }
    }
    Ok(())
}

fn check_capture_name(name: &str, seen: &[String]) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "invalid capture `{{{name}}}`: a name is a letter or `_` then letters, digits or `_` \
             (alternatives like {{a,b}} are not supported; write `\\{{` for a literal brace)"
        ));
    }
    let upper = name.to_ascii_uppercase();
    if RESERVED_CAPTURES.contains(&upper.as_str()) {
        return Err(format!(
            "capture `{{{name}}}` would clash with CACHETTA_{upper}; choose another name"
        ));
    }
    // Names become CACHETTA_<NAME>, so `city` and `CITY` are the same variable.
    if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        return Err(format!("capture `{{{name}}}` appears twice"));
    }
    Ok(())
}

fn push_literal(regex: &mut String, c: char) {
    if c.is_ascii() {
        regex.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
    } else {
        // Byte escapes, because the regex runs without Unicode mode.
        for b in c.encode_utf8(&mut [0; 4]).bytes() {
            regex.push_str(&format!(r"\x{b:02X}"));
        }
    }
}

/// A pattern segment's literal text, or `None` if it has a wildcard or capture.
pub(super) fn unescape_literal(segment: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '{' | '}' => return None,
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    Some(out)
}
