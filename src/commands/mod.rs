//! The inspection commands `cachetta ls`, `info` and `gc`, computed from the backing dir and
//! the config alone (no mount needed), and `unmount` in [`unmount`].
//!
//! Exit codes: 0 success, 1 the thing asked about is not there (or an I/O failure), 2 bad
//! usage or configuration.

pub mod unmount;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::cli::{self, GcArgs, InfoArgs, LsArgs, EXIT_USAGE};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Overrides};
use crate::gc;
use crate::inspect::{self, human_duration, Info, InfoState};
use crate::store::{Kind, Store};

/// The thing asked about is not there, or the backing dir cannot be read.
const EXIT_NOT_FOUND: u8 = 1;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("cachetta: {message}");
    ExitCode::from(code)
}

/// Write all of `text` to stdout; a closed pipe (`cachetta ls | head`) is not an error.
fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_NOT_FOUND, format_args!("cannot write output: {e}")),
    }
}

/// A key or prefix argument as a path relative to the root, or a usage error.
fn relative_arg(input: &Path, what: &str) -> Result<PathBuf, ExitCode> {
    inspect::relative_key(input).ok_or_else(|| {
        fail(
            EXIT_USAGE,
            format_args!(
                "{what} {} must be relative to the cache root (like weather/paris.json), without `..`",
                input.display()
            ),
        )
    })
}

/// The backing dir, or `None` if it does not exist yet (an empty cache; never created here).
fn open_store(config: &Config) -> Result<Option<Store>, ExitCode> {
    if std::fs::symlink_metadata(&config.backing).is_err() {
        return Ok(None);
    }
    Store::open(&config.backing, config.sync_writes)
        .map(Some)
        .map_err(|e| {
            fail(
                EXIT_NOT_FOUND,
                format_args!("cannot open backing dir {}: {e}", config.backing.display()),
            )
        })
}

/// One row of `ls --json`: the key, then every field of `info`.
#[derive(Serialize)]
struct Listed<'a> {
    key: String,
    #[serde(flatten)]
    info: &'a Info,
}

/// `cachetta ls [PREFIX] [--all] [--json]`.
pub fn ls(args: LsArgs) -> ExitCode {
    let config = match cli::load_config(&args.common, Overrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let prefix = match args.prefix.as_deref().map(|p| relative_arg(p, "PREFIX")) {
        None => PathBuf::new(),
        Some(Ok(p)) => p,
        Some(Err(code)) => return code,
    };
    let store = match open_store(&config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rows = match &store {
        Some(store) => match list(store, &config, &prefix, args.all) {
            Ok(rows) => rows,
            Err(code) => return code,
        },
        None if prefix.as_os_str().is_empty() => Vec::new(),
        None => {
            return fail(
                EXIT_NOT_FOUND,
                format_args!(
                    "no such directory: {} (the backing dir {} does not exist yet)",
                    prefix.display(),
                    config.backing.display()
                ),
            )
        }
    };
    if args.json {
        let listed: Vec<Listed> = rows
            .iter()
            .map(|(key, info)| Listed {
                key: key.to_string_lossy().into_owned(),
                info,
            })
            .collect();
        let json = serde_json::to_string_pretty(&listed).unwrap_or_else(|_| "[]".into());
        return print(&(json + "\n"));
    }
    print(&table(&rows))
}

/// The files under `prefix` with their info, sorted by key bytes; only fresh and stale
/// entries unless `all`.
fn list(
    store: &Store,
    config: &Config,
    prefix: &Path,
    all: bool,
) -> Result<Vec<(PathBuf, Info)>, ExitCode> {
    let walk = inspect::walk_files(store, prefix).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::ENOENT) => "no such directory".to_string(),
            Some(libc::ENOTDIR) => "not a directory".to_string(),
            Some(libc::ELOOP) => "a symlink, which cachetta never follows".to_string(),
            _ => e.to_string(),
        };
        fail(
            EXIT_NOT_FOUND,
            format_args!(
                "cannot list {}: {why} (in backing dir {})",
                prefix.display(),
                store.root_path().display()
            ),
        )
    })?;
    for (dir, e) in &walk.unreadable {
        eprintln!("cachetta: skipping {}: {e}", dir.display());
    }
    let now = SystemClock.now();
    let mut rows: Vec<(PathBuf, Info)> = walk
        .files
        .into_iter()
        .map(|found| {
            let info = inspect::entry_info(store, config, &found.key, now);
            (found.key, info)
        })
        .filter(|(_, info)| info.exists && (all || info.is_visible()))
        .collect();
    rows.sort_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    Ok(rows)
}

/// Aligned columns KEY, STATE, AGE, TTL, SIZE (bytes); a header even when empty.
fn table(rows: &[(PathBuf, Info)]) -> String {
    let mut cells: Vec<[String; 5]> =
        vec![["KEY", "STATE", "AGE", "TTL", "SIZE"].map(String::from)];
    for (key, info) in rows {
        let seconds = |value: Option<i64>| value.map_or_else(|| "-".to_string(), human_duration);
        let ttl = match info.state {
            Some(InfoState::Scratch) => "-".to_string(),
            _ => seconds(info.ttl),
        };
        cells.push([
            key.to_string_lossy().into_owned(),
            info.state.map_or("-", InfoState::as_str).to_string(),
            seconds(info.age.map(|age| age.floor() as i64)),
            ttl,
            info.size
                .map_or_else(|| "-".to_string(), |size| size.to_string()),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let [key, state, age, ttl, size] = row;
        let line = format!(
            "{key:<kw$}  {state:<sw$}  {age:>aw$}  {ttl:>tw$}  {size:>zw$}",
            kw = widths[0],
            sw = widths[1],
            aw = widths[2],
            tw = widths[3],
            zw = widths[4],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `cachetta info KEY`.
pub fn info(args: InfoArgs) -> ExitCode {
    let config = match cli::load_config(&args.common, Overrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let key = match relative_arg(&args.key, "KEY") {
        Ok(k) if !k.as_os_str().is_empty() => k,
        Ok(_) => return fail(EXIT_USAGE, "KEY must name a file, like weather/paris.json"),
        Err(code) => return code,
    };
    let store = match open_store(&config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let info = match &store {
        Some(store) => inspect::entry_info(store, &config, &key, SystemClock.now()),
        None => {
            let timing = config.settings_for(key.as_os_str()).settings.timing();
            Info::missing(config.backing.join(&key), timing)
        }
    };
    let json = serde_json::to_string_pretty(&info).unwrap_or_else(|_| "{}".into());
    let printed = print(&(json + "\n"));
    if info.exists {
        return printed;
    }
    let why = match store.as_ref().and_then(|s| s.stat(&key).ok()) {
        Some(st) if st.kind == Kind::Dir => "is a directory, not an entry",
        Some(_) => "is not a regular file (symlinks and special files are never served)",
        None => "does not exist",
    };
    fail(
        EXIT_NOT_FOUND,
        format_args!("{} {why} ({})", key.display(), info.path.display()),
    )
}

/// `cachetta gc [--dry-run]`.
pub fn gc(args: GcArgs) -> ExitCode {
    cli::init_logging(0, true);
    let config = match cli::load_config(&args.common, Overrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open_store(&config) {
        Ok(Some(s)) => s,
        Ok(None) => return print("nothing to remove\n"),
        Err(code) => return code,
    };
    let swept = match gc::sweep(&store, &config, SystemClock.now(), args.dry_run) {
        Ok(swept) => swept,
        Err(e) => {
            return fail(
                EXIT_NOT_FOUND,
                format_args!("cannot sweep {}: {e}", store.root_path().display()),
            )
        }
    };
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut out = String::new();
    for s in &swept {
        out.push_str(&format!("{verb} {} ({})\n", s.key.display(), s.reason));
    }
    if swept.is_empty() {
        out.push_str("nothing to remove\n");
    } else {
        out.push_str(&format!("{verb} {}\n", gc::summary(&swept)));
    }
    print(&out)
}
