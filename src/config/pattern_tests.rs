//! Rule patterns: what `match` accepts, what it matches and what its `{captures}` return.

use super::*;

fn rule(pattern: &str) -> Rule {
    match Rule::new(pattern, Settings::default()) {
        Ok(rule) => rule,
        Err(e) => panic!("{e}"),
    }
}

fn caps(pattern: &str, key: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    rule(pattern).captures(OsStr::from_bytes(key))
}

fn matches(pattern: &str, key: &str) -> bool {
    caps(pattern, key.as_bytes()).is_some()
}

#[test]
fn star_and_question_mark_stay_within_one_segment() {
    assert!(matches("*.json", "a.json"));
    assert!(matches("*.json", ".json"));
    assert!(!matches("*.json", "d/a.json"));
    assert!(matches("d/*.json", "d/a.json"));
    assert!(!matches("d/*.json", "d/e/a.json"));
    assert!(matches("d/?.json", "d/a.json"));
    assert!(matches("d/?.json", "d/é.json"));
    assert!(!matches("d/?.json", "d/ab.json"));
    assert!(!matches("?", "/"));
}

#[test]
fn double_star_matches_zero_or_more_segments() {
    assert!(matches("a/**/b.json", "a/b.json"));
    assert!(matches("a/**/b.json", "a/x/b.json"));
    assert!(matches("a/**/b.json", "a/x/y/b.json"));
    assert!(!matches("a/**/b.json", "a/xb.json"));
    assert!(matches("**", "x.json"));
    assert!(matches("**", "x/y/z.json"));
    assert!(matches("**/*.json", "x.json"));
    assert!(matches("**/*.json", "x/y/z.json"));
    assert!(!matches("**/*.json", "x/y/z.txt"));
    assert!(matches("a/**", "a/x/y.json"));
    assert!(!matches("a/**", "b/x.json"));
}

#[test]
fn patterns_are_anchored_on_the_whole_key() {
    assert!(!matches("a.json", "xa.json"));
    assert!(!matches("a.json", "a.json.bak"));
    assert!(!matches("a/*.json", "b/a/x.json"));
}

#[test]
fn regex_metacharacters_are_literal() {
    assert!(matches("a.b+c(d)[e]^$|.json", "a.b+c(d)[e]^$|.json"));
    assert!(!matches("a.json", "axjson"));
    assert!(!matches("a+.json", "aa.json"));
    assert!(matches("café/*.json", "café/x.json"));
    assert!(matches("lit\\{x\\}\\*.json", "lit{x}*.json"));
    assert!(!matches("lit\\*.json", "litx.json"));
}

#[test]
fn named_captures_return_raw_bytes_in_pattern_order() {
    assert_eq!(
        caps("weather/{city}.json", b"weather/paris.json"),
        Some(vec![("city".into(), b"paris".to_vec())])
    );
    assert_eq!(
        caps("{country}/{city}-{day}.json", b"fr/paris-mon.json"),
        Some(vec![
            ("country".into(), b"fr".to_vec()),
            ("city".into(), b"paris".to_vec()),
            ("day".into(), b"mon".to_vec()),
        ])
    );
    // A capture is a non-empty part of one segment.
    assert_eq!(caps("weather/{city}.json", b"weather/.json"), None);
    assert_eq!(caps("weather/{city}.json", b"weather/a/b.json"), None);
}

#[test]
fn non_utf8_keys_match_and_capture() {
    let key = b"weather/p\xffris.json";
    assert_eq!(
        caps("weather/{city}.json", key),
        Some(vec![("city".into(), b"p\xffris".to_vec())])
    );
    assert!(caps("weather/*.json", key).is_some());
    assert!(caps("**", key).is_some());
    assert!(caps("weather/p?ris.json", key).is_some());
}

#[test]
fn capture_names_are_checked() {
    for bad in [
        "{}.json",
        "{1a}.json",
        "{a-b}.json",
        "{a,b}.json",
        "{a}{A}.json",
        "{name}.json",
        "{Reason}.json",
    ] {
        assert!(Rule::new(bad, Settings::default()).is_err(), "{bad}");
    }
    for good in ["{_a1}.json", "{City}.json", "{a}-{b}.json"] {
        assert!(Rule::new(good, Settings::default()).is_ok(), "{good}");
    }
}
