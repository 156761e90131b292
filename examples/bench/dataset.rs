//! The data set: the same tree written twice, once as the mount's backing dir and once as a
//! plain sibling dir for the native runs (so native runs never wake the daemon's watcher),
//! plus the mount's config file; and the small backing dir and config that the two mounts of
//! `shared-refresh` share.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// Size of the small entries (hot read, writes, stale read).
pub const SMALL: usize = 4096;
/// The stale-read rule: entries under `stale/` are fresh for an hour, then stale for an hour,
/// and their refresh takes 5 s.
pub const STALE_DURATION: Duration = Duration::from_secs(3600);

/// How big the data set is.
pub struct Sizes {
    pub entries: usize,
    pub big_mib: usize,
    /// How many stale entries to prepare (one per round, so each round starts its own refresh).
    pub stale_keys: usize,
}

/// Where everything is. `native` and `backing` hold the same tree.
pub struct Layout {
    pub native: PathBuf,
    pub backing: PathBuf,
    pub config: PathBuf,
    /// The same config with `watch = "poll=1h"`: no inotify watcher (attribution runs only:
    /// changes behind the mount's back would go unseen for an hour).
    pub config_poll: PathBuf,
    pub work: PathBuf,
    pub entries: usize,
    pub big_bytes: u64,
    /// `shared-refresh`'s own backing dir (one stale key per round), its config, and the
    /// file outside it where the refresh command appends a line per run.
    pub shared_backing: PathBuf,
    pub shared_config: PathBuf,
    pub shared_runs: PathBuf,
}

impl Layout {
    pub fn hot(root: &Path) -> PathBuf {
        root.join("hot.json")
    }
    pub fn many(root: &Path) -> PathBuf {
        root.join("many")
    }
    pub fn big(root: &Path) -> PathBuf {
        root.join("big.json")
    }
    pub fn writes(root: &Path) -> PathBuf {
        root.join("writes")
    }
    pub fn stale_key(root: &Path, round: usize) -> PathBuf {
        root.join(format!("stale/r{round}.json"))
    }
    pub fn fresh_key(root: &Path) -> PathBuf {
        root.join("stale/fresh.json")
    }
    pub fn shared_key(root: &Path, round: usize) -> PathBuf {
        root.join(format!("r{round}.json"))
    }
    pub fn entry_paths(&self, root: &Path) -> Vec<PathBuf> {
        (0..self.entries)
            .map(|i| Self::many(root).join(entry_name(i)))
            .collect()
    }
}

fn entry_name(i: usize) -> String {
    format!("e{i:06}.json")
}

/// What a `shared-refresh` key holds before its refresh, and what its refresh command prints.
pub const SHARED_OLD: &[u8] = b"{\"v\":\"old\"}\n";
pub const SHARED_NEW: &[u8] = b"{\"v\":\"new\"}\n";
/// How long `shared-refresh`'s command sleeps between counting its run and printing.
pub const SHARED_COMMAND_SECS: u64 = 1;

/// A valid JSON object of exactly `len` bytes (newline included) whose content depends on `tag`.
pub fn small_json(len: usize, tag: u64) -> Vec<u8> {
    let head = format!("{{\"tag\":{tag},\"pad\":\"");
    let tail = "\"}\n";
    let mut out = head.into_bytes();
    out.resize(len - tail.len(), b'x');
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Write the data set under `work` (a fresh directory).
/// `config_lines` go at the top level of the mount's config (experiments: `watch = "poll=1h"`).
pub fn prepare(work: &Path, sizes: &Sizes, config_lines: &[String]) -> Result<Layout> {
    let layout = Layout {
        native: work.join("native"),
        backing: work.join("backing"),
        config: work.join("config.toml"),
        config_poll: work.join("config-poll.toml"),
        work: work.to_path_buf(),
        entries: sizes.entries,
        big_bytes: (sizes.big_mib as u64) << 20,
        shared_backing: work.join("shared/backing"),
        shared_config: work.join("shared/config.toml"),
        shared_runs: work.join("shared/runs"),
    };
    for root in [&layout.native, &layout.backing] {
        write_tree(root, sizes)
            .with_context(|| format!("writing the data set in {}", root.display()))?;
    }
    let mut config = config_lines.join("\n");
    config.push('\n');
    config.push_str(&config_toml());
    fs::write(&layout.config, &config)?;
    fs::write(
        &layout.config_poll,
        format!("watch = \"poll=1h\"\n{config}"),
    )?;
    fs::create_dir_all(&layout.shared_backing)?;
    for round in 0..sizes.stale_keys {
        fs::write(
            Layout::shared_key(&layout.shared_backing, round),
            SHARED_OLD,
        )?;
    }
    let mut shared = config_lines.join("\n");
    shared.push('\n');
    shared.push_str(&shared_config_toml(&layout.shared_runs));
    fs::write(&layout.shared_config, shared)?;
    // Nothing left to write back while measuring.
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    Ok(layout)
}

/// The mount's config: room for the big entry, no gc sweep during the run, and the rule of the
/// stale-while-revalidate workload. Everything else is the default.
fn config_toml() -> String {
    format!(
        r#"max_entry_bytes = "1GiB"
gc_interval = "0"
# One refresh per round of the stale workload, all running at once (none queued).
max_refreshes = 16

[[rule]]
match = "stale/*.json"
duration = "{d}s"
stale = "{d}s"
refresh = "sleep 5; cat \"$CACHETTA_ENTRY\""
"#,
        d = STALE_DURATION.as_secs()
    )
}

/// `shared-refresh`'s config: every key stale for an hour after an hour, and a refresh that
/// appends a line to `runs` (outside the backing dir), sleeps, then prints the new entry.
fn shared_config_toml(runs: &Path) -> String {
    let command = format!(
        "echo \"$CACHETTA_KEY\" >> '{}'; sleep {SHARED_COMMAND_SECS}; echo '{}'",
        runs.display(),
        String::from_utf8_lossy(SHARED_NEW).trim_end()
    );
    format!(
        r#"gc_interval = "0"

[[rule]]
match = "r*.json"
duration = "{d}s"
stale = "{d}s"
refresh = "{command}"
"#,
        d = STALE_DURATION.as_secs(),
        command = command.replace('\\', "\\\\").replace('"', "\\\""),
    )
}

fn write_tree(root: &Path, sizes: &Sizes) -> Result<()> {
    fs::create_dir_all(Layout::many(root))?;
    fs::create_dir_all(Layout::writes(root))?;
    fs::create_dir_all(root.join("stale"))?;
    fs::write(Layout::hot(root), small_json(SMALL, 0))?;
    for i in 0..sizes.entries {
        fs::write(
            Layout::many(root).join(entry_name(i)),
            format!("{{\"i\":{i}}}\n"),
        )?;
    }
    fs::write(Layout::fresh_key(root), small_json(SMALL, 1))?;
    for round in 0..sizes.stale_keys {
        fs::write(Layout::stale_key(root, round), small_json(SMALL, 2))?;
    }
    write_big(&Layout::big(root), (sizes.big_mib as u64) << 20)
}

/// A JSON array of 64-byte string records, `len` bytes in all: `["...",\n"...",\n ... 0]\n`.
fn write_big(path: &Path, len: u64) -> Result<()> {
    const RECORD: usize = 64;
    let mut record = vec![b'"'];
    record.resize(RECORD - 3, b'a');
    record.extend_from_slice(b"\",\n");
    let chunk: Vec<u8> = record.iter().copied().cycle().take(1 << 20).collect();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    out.write_all(b"[")?;
    // "[" + whole records + "0]\n" must add up to `len`.
    let mut left = len - 1 - 3;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        let n = n - n % RECORD;
        if n == 0 {
            // Less than one record left: pad with whitespace, which JSON allows.
            out.write_all(&vec![b' '; left as usize])?;
            break;
        }
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.write_all(b"0]\n")?;
    out.into_inner()?.sync_all()?;
    Ok(())
}

/// Set a file's mtime to `age` ago (`utimensat`, as the tests do).
pub fn set_age(path: &Path, age: Duration) -> Result<()> {
    let file = File::options().write(true).open(path)?;
    file.set_modified(SystemTime::now() - age)?;
    Ok(())
}
