//! `cachetta::hash` against the real Python package, live: a hand-written table where each
//! case names its Python arguments independently, plus seeded random floats, strings and
//! nested objects sent to Python as JSON (which `json.loads` reads exactly, `NaN` included).
//!
//! Python comes from `CACHETTA_PYTHON` or `target/py-venv/bin/python` (made by
//! `scripts/python-parity-venv.sh`). Without one the test is skipped, unless `CI`,
//! `CACHETTA_REQUIRE_PYTHON` or `CACHETTA_REQUIRE_FUSE=1` (what `.ci/run` sets) says this is
//! CI, when it fails: the parity check never passes by not running there.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use cachetta::hash::{hash, key_text};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Reads one case per line, `py <expression>` or `json <text>`, each the argument list, and
/// prints `<digest> <the text that was hashed>` for each.
const DRIVER: &str = r#"
import json, sys
from cachetta import hash
names = {"nan": float("nan"), "inf": float("inf"), "__builtins__": {}}
for line in sys.stdin.buffer.read().decode("utf-8").split("\n"):
    if not line:
        continue
    kind, source = line.split(" ", 1)
    args = eval(source, names) if kind == "py" else json.loads(source)
    text = json.dumps({"args": args, "kwargs": {}}, sort_keys=True, default=str)
    print(hash(*args), text)
"#;

struct Case {
    /// `py <expr>` or `json <text>`: the same arguments, as Python sees them.
    python: String,
    rust_digest: String,
    rust_text: String,
}

fn case<A: Serialize + ?Sized>(python: String, args: &A) -> Case {
    Case {
        python,
        rust_digest: hash(args),
        rust_text: key_text(args).unwrap(),
    }
}

/// A case whose Python side is written by hand (a Python expression for the argument list).
fn py<A: Serialize + ?Sized>(python_args: &str, args: &A) -> Case {
    case(format!("py {python_args}"), args)
}

/// A case whose Python side is serde_json's text of the same value.
fn via_json(args: &Value) -> Case {
    case(
        format!("json {}", serde_json::to_string(args).unwrap()),
        args,
    )
}

fn table() -> Vec<Case> {
    let mut int_keyed = std::collections::BTreeMap::new();
    int_keyed.insert(-3i64, "c");
    int_keyed.insert(2, "b");
    int_keyed.insert(10, "a");
    vec![
        py("[]", &()),
        py("[]", &json!([])),
        py("[None]", &[None::<()>]),
        py("[1, 'x']", &(1, "x")),
        py("['user-123']", "user-123"),
        py("[True, False, None]", &(true, false, None::<u8>)),
        py("[0, -1, 42, -42]", &(0, -1, 42, -42)),
        py(
            "[2**63 - 1, -2**63, 2**64 - 1]",
            &(i64::MAX, i64::MIN, u64::MAX),
        ),
        py("[2**128 - 1, -2**127]", &(u128::MAX, i128::MIN)),
        py(
            "[0.1, 1e16, 1e-7, 1.5, 100.0, -0.0, 0.0]",
            &(0.1, 1e16, 1e-7, 1.5, 100.0, -0.0, 0.0),
        ),
        py(
            "[123456789012345.0, 1234567890123456.0, 12345678901234567.0]",
            &(123456789012345.0, 1234567890123456.0, 12345678901234567.0),
        ),
        py(
            "[0.0001, 0.00001, 1e22, 1e-300]",
            &(0.0001, 0.00001, 1e22, 1e-300),
        ),
        py(
            "[1.7976931348623157e308, 5e-324, 2.2250738585072014e-308]",
            &(f64::MAX, 5e-324, f64::MIN_POSITIVE),
        ),
        // Exact ties between two shortest decimals: Python's repr rounds half to even.
        py(
            "[1774306205806144.25, 1527000000000000.25]",
            &(1774306205806144.0 + 0.25, 1527000000000000.0 + 0.25),
        ),
        py(
            "[nan, inf, -inf]",
            &(f64::NAN, f64::INFINITY, f64::NEG_INFINITY),
        ),
        py("[0.1]", &(0.1f32,)),
        py("['']", &("",)),
        py(
            r#"['h\u00e9llo', '\u65e5\u672c', '\U0001F600', '\U0010FFFF']"#,
            &("héllo", "日本", "😀", "\u{10FFFF}"),
        ),
        py(
            r#"['\x00\x01\x1f\x7f\x80', '\b\f\n\r\t', '"\\/\'']"#,
            &("\u{0}\u{1}\u{1f}\u{7f}\u{80}", "\u{8}\u{c}\n\r\t", "\"\\/'"),
        ),
        py(
            r#"['\u2028\u2029\ufeff\ue000\uffff']"#,
            &("\u{2028}\u{2029}\u{feff}\u{e000}\u{ffff}",),
        ),
        py("[[1, [2, []]], {}]", &json!([[1, [2, []]], {}])),
        py(
            "[{'b': [1, {'z': None, 'a': True}], 'a': False, 'B': 0.5}]",
            &json!([{"b": [1, {"z": null, "a": true}], "a": false, "B": 0.5}]),
        ),
        // Code point order: U+FFFF sorts before U+10000 (UTF-16 order would flip them).
        py(
            r#"[{'\U00010000': 1, '\uffff': 2, '\ue000': 3, 'z': 4, '': 5}]"#,
            &json!([{"\u{10000}": 1, "\u{ffff}": 2, "\u{e000}": 3, "z": 4, "": 5}]),
        ),
        py("[{-3: 'c', 2: 'b', 10: 'a'}]", &(int_keyed,)),
    ]
}

/// xorshift64*: a fixed seed keeps failures reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn float(&mut self) -> f64 {
        match self.below(4) {
            // Any bit pattern: every exponent, subnormals, both zeros.
            0 => loop {
                let f = f64::from_bits(self.next());
                if f.is_finite() {
                    return f;
                }
            },
            // Short decimals, where repr's digit choice is most visible.
            1 => (self.below(2_000_001) as f64 - 1_000_000.0) / 10f64.powi(self.below(8) as i32),
            // Around the positional/exponent switch points 1e-4 and 1e16.
            2 => {
                let scale = [1e-5, 1e-4, 1e15, 1e16, 1e17][self.below(5) as usize];
                scale * (1.0 + self.below(1000) as f64 / 1000.0)
            }
            _ => (self.next() as i64 as f64) / (1u64 << self.below(64)) as f64,
        }
    }

    fn char(&mut self) -> char {
        let ranges: [(u32, u32); 6] = [
            (0x00, 0x7f),
            (0x80, 0x7ff),
            (0x800, 0xd7ff),
            (0xe000, 0xffff),
            (0x1_0000, 0x10_ffff),
            (0x20, 0x7e),
        ];
        let (lo, hi) = ranges[self.below(ranges.len() as u64) as usize];
        char::from_u32(lo + self.below(u64::from(hi - lo + 1)) as u32).unwrap()
    }

    fn string(&mut self) -> String {
        (0..self.below(8)).map(|_| self.char()).collect()
    }

    fn value(&mut self, depth: u32) -> Value {
        let kinds = if depth == 0 { 6 } else { 8 };
        match self.below(kinds) {
            0 => Value::Null,
            1 => Value::Bool(self.below(2) == 1),
            2 => json!(self.next() as i64 >> self.below(64)),
            3 => json!(self.next()),
            4 => json!(self.float()),
            5 => Value::String(self.string()),
            6 => (0..self.below(4)).map(|_| self.value(depth - 1)).collect(),
            _ => {
                let map: Map<String, Value> = (0..self.below(5))
                    .map(|_| (self.string(), self.value(depth - 1)))
                    .collect();
                Value::Object(map)
            }
        }
    }
}

fn random_cases() -> Vec<Case> {
    let mut rng = Rng(0x5eed_cace_77a0_0001);
    let mut cases = Vec::new();
    // CACHETTA_PARITY_SCALE=100 runs a hundred times as many (a few seconds in release).
    let scale: usize = std::env::var("CACHETTA_PARITY_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for _ in 0..3000 * scale {
        cases.push(via_json(&json!([rng.float()])));
    }
    for _ in 0..1000 * scale {
        cases.push(via_json(&json!([rng.string(), rng.string()])));
    }
    for _ in 0..1000 * scale {
        let args: Vec<Value> = (0..rng.below(4)).map(|_| rng.value(3)).collect();
        cases.push(via_json(&Value::Array(args)));
    }
    cases
}

/// A Python that can `import cachetta`, or `None` after saying why the test is skipped.
fn find_python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("CACHETTA_PYTHON") {
        Some(path) => vec![path.into()],
        None => vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python")],
    };
    for python in &candidates {
        let imports = Command::new(python)
            .args(["-c", "import cachetta"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if imports.is_ok_and(|s| s.success()) {
            return Some(python.clone());
        }
    }
    let why = format!(
        "no Python with cachetta installed (tried {candidates:?}); \
         run scripts/python-parity-venv.sh or set CACHETTA_PYTHON"
    );
    let required = std::env::var_os("CI").is_some()
        || std::env::var_os("CACHETTA_REQUIRE_PYTHON").is_some()
        || std::env::var_os("CACHETTA_REQUIRE_FUSE").is_some_and(|v| v == "1");
    if required {
        panic!("{why}");
    }
    eprintln!("SKIPPED python_hash: {why}");
    None
}

fn run_python(python: &PathBuf, cases: &[Case]) -> Vec<(String, String)> {
    let mut child = Command::new(python)
        .args(["-c", DRIVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python");
    let mut input = String::new();
    for case in cases {
        assert!(
            !case.python.contains('\n'),
            "case must be one line: {}",
            case.python
        );
        input.push_str(&case.python);
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("run python");
    writer.join().unwrap().expect("write cases to python");
    assert!(output.status.success(), "python driver failed");
    let stdout = String::from_utf8(output.stdout).expect("python output is ASCII");
    let results: Vec<(String, String)> = stdout
        .lines()
        .map(|line| {
            let (digest, text) = line.split_once(' ').expect("`<digest> <text>` line");
            (digest.to_owned(), text.to_owned())
        })
        .collect();
    assert_eq!(results.len(), cases.len(), "one python answer per case");
    results
}

fn assert_all_match(python: &PathBuf, cases: &[Case]) {
    let results = run_python(python, cases);
    let failures: Vec<String> = cases
        .iter()
        .zip(&results)
        .filter(|(case, (digest, _))| case.rust_digest != *digest)
        .map(|(case, (digest, text))| {
            format!(
                "{}\n  python {digest} {text}\n  rust   {} {}",
                case.python, case.rust_digest, case.rust_text
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Python:\n{}",
        failures.len(),
        cases.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

#[test]
fn table_matches_python_cachetta() {
    if let Some(python) = find_python() {
        assert_all_match(&python, &table());
    }
}

#[test]
fn random_values_match_python_cachetta() {
    if let Some(python) = find_python() {
        assert_all_match(&python, &random_cases());
    }
}
