//! Where `tracing` output goes and how its lines look: stderr in the foreground, or an
//! append-only log file (`--log-file`, and always with `--daemon`) that SIGHUP can reopen.
//! When stderr is systemd's journal (`JOURNAL_STREAM` names it), every line starts with its
//! syslog priority and carries no timestamp (SPEC §14); on a terminal, colour unless
//! `NO_COLOR`. `-v`/`-q` pick the level; `CACHETTA_LOG` or `RUST_LOG` override it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// `$XDG_STATE_HOME/cachetta/cachetta.log` (`~/.local/state/cachetta/cachetta.log`).
pub fn default_file() -> PathBuf {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    // The XDG spec says a relative value is invalid and must be ignored.
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".local/state"));
    state.join("cachetta").join("cachetta.log")
}

/// Open `path` for appending (created `0600` with its missing parent directories).
pub fn open_file(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    File::options()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Open `path` anew and make `file` (the descriptor the subscriber writes to) refer to it, so
/// the lines after a rotation (`logrotate` renames the file, then sends SIGHUP) go to the new
/// file. With `stderr_too` (a `--daemon`, whose stderr is the log file) stderr follows, so
/// that a panic message lands there too.
pub fn reopen(file: &File, path: &Path, stderr_too: bool) -> io::Result<()> {
    let fresh = open_file(path)?;
    // SAFETY: dup3 only changes which open file the descriptor `file` owns refers to; the
    // descriptor stays open and owned by `file`, so nothing is closed behind anyone's back,
    // and a line being written meanwhile goes whole to the old or the new file.
    let done = unsafe { libc::dup3(fresh.as_raw_fd(), file.as_raw_fd(), libc::O_CLOEXEC) };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    if stderr_too {
        rustix::stdio::dup2_stderr(file)?;
    }
    Ok(())
}

/// How the lines look, for whoever reads the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// systemd's journal reads stderr: each line starts with its syslog priority (`<4>`) and
    /// has no timestamp, which the journal adds itself.
    Journal,
    /// A terminal, a file or a pipe: a timestamp first, colour only if `ansi`.
    Plain { ansi: bool },
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the device and inode of
/// the stream it connected stdout/stderr to (`DEV:INODE`, decimal; see `systemd.exec(5)`). A
/// child that inherited the variable but whose stderr was redirected elsewhere must not
/// write priorities into a file, so the variable alone proves nothing.
pub fn stderr_is_journal() -> bool {
    is_journal(
        std::env::var_os("JOURNAL_STREAM").as_deref(),
        io::stderr().as_fd(),
    )
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`) names the file open on `fd`.
fn is_journal(journal_stream: Option<&OsStr>, fd: impl AsFd) -> bool {
    let Some(value) = journal_stream else {
        return false;
    };
    match rustix::fs::fstat(fd) {
        Ok(st) => names_stream(value, st.st_dev, st.st_ino),
        Err(_) => false,
    }
}

/// Whether `value` is `DEV:INODE` in decimal with exactly these numbers.
fn names_stream(value: &OsStr, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let number = |s: &str| {
        // `u64::from_str` takes a leading `+`; systemd never writes one.
        s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty()
    };
    number(d) && number(i) && d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// Colour only on a terminal, and not when `NO_COLOR` is set to anything but the empty
/// string (<https://no-color.org>). Computed here because tracing-subscriber's own `NO_COLOR`
/// check is overridden by any explicit `with_ansi`.
fn wants_colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// The syslog priority of a level (`sd-daemon(3)`): error 3, warning 4, info 6, debug 7.
/// Trace has no syslog level of its own; it is debugging output too.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Prefixes every line of what `F` formats with the event's `<priority>`. journald reads one
/// record per line and takes the priority from each line's prefix, so a message that spans
/// lines keeps its priority on every line instead of falling back to info.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut text = String::new();
        self.0.format_event(ctx, Writer::new(&mut text), event)?;
        let priority = priority(event.metadata().level());
        // The level is padded to five columns (` INFO`); the journal needs no alignment.
        for line in text.trim_start().trim_end_matches('\n').split('\n') {
            writeln!(writer, "<{priority}>{line}")?;
        }
        Ok(())
    }
}

/// The subscriber: `filter`, then lines in `style` to `writer`.
fn subscriber<W>(filter: EnvFilter, writer: W, style: Style) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match style {
        Style::Journal => {
            let inner = tracing_subscriber::fmt::format()
                .without_time()
                .with_ansi(false);
            Box::new(
                builder
                    .with_ansi(false)
                    .event_format(Prioritised(inner))
                    .finish(),
            )
        }
        Style::Plain { ansi } => Box::new(builder.with_ansi(ansi).finish()),
    }
}

/// Install the global subscriber, writing to `file` or else to stderr. A second call is a
/// no-op.
pub fn init(verbose: u8, quiet: bool, file: Option<Arc<File>>) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = std::env::var("CACHETTA_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| format!("cachetta={level},fuser=warn"));
    let filter = EnvFilter::new(filter);
    let subscriber = match file {
        Some(file) => subscriber(filter, file, Style::Plain { ansi: false }),
        None => subscriber(filter, io::stderr, stderr_style()),
    };
    // Also routes fuser's `log` records through the filter (tracing-log).
    let _ = subscriber.try_init();
}

/// How lines written to stderr should look.
fn stderr_style() -> Style {
    if stderr_is_journal() {
        return Style::Journal;
    }
    let terminal = io::IsTerminal::is_terminal(&io::stderr());
    Style::Plain {
        ansi: wants_colour(terminal, std::env::var_os("NO_COLOR").as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;

    #[test]
    fn open_file_creates_parents_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/cachetta.log");
        std::io::Write::write_all(&mut open_file(&path).unwrap(), b"one\n").unwrap();
        std::io::Write::write_all(&mut open_file(&path).unwrap(), b"two\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn reopen_sends_later_writes_to_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cachetta.log");
        let file = open_file(&path).unwrap();
        std::io::Write::write_all(&mut &file, b"before\n").unwrap();
        // What logrotate does without copytruncate.
        std::fs::rename(&path, dir.path().join("cachetta.log.1")).unwrap();
        reopen(&file, &path, false).unwrap();
        std::io::Write::write_all(&mut &file, b"after\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after\n");
        let rotated = std::fs::read(dir.path().join("cachetta.log.1")).unwrap();
        assert_eq!(rotated, b"before\n");
    }

    #[test]
    fn journal_stream_must_name_the_device_and_inode_of_the_stream() {
        let file = tempfile::tempfile().unwrap();
        let meta = file.metadata().unwrap();
        let (dev, ino) = (meta.dev(), meta.ino());
        let named = format!("{dev}:{ino}");
        assert!(is_journal(Some(OsStr::new(&named)), &file));
        let others = [
            format!("{dev}:{}", ino + 1),
            format!("{}:{ino}", dev + 1),
            format!("{ino}:{dev}"),
            format!("{dev:x}:{ino:x}"),
            format!("+{dev}:{ino}"),
            format!("{dev}:{ino}:0"),
            format!("{dev}"),
            String::new(),
        ];
        for value in &others {
            if value != &named {
                assert!(!is_journal(Some(OsStr::new(value)), &file), "{value:?}");
            }
        }
        assert!(!is_journal(None, &file));
    }

    #[test]
    fn names_stream_reads_two_decimal_numbers() {
        assert!(names_stream(OsStr::new("8:123456"), 8, 123456));
        assert!(names_stream(OsStr::new("0:1"), 0, 1));
        assert!(!names_stream(OsStr::new("8:123457"), 8, 123456));
        assert!(!names_stream(OsStr::new("8:"), 8, 0));
        assert!(!names_stream(OsStr::new(":0"), 0, 0));
        assert!(!names_stream(OsStr::new(" 8:123456"), 8, 123456));
    }

    #[test]
    fn colour_needs_a_terminal_and_no_non_empty_no_color() {
        assert!(wants_colour(true, None));
        assert!(wants_colour(true, Some(OsStr::new(""))));
        assert!(!wants_colour(true, Some(OsStr::new("1"))));
        assert!(!wants_colour(true, Some(OsStr::new("0"))));
        assert!(!wants_colour(false, None));
        assert!(!wants_colour(false, Some(OsStr::new(""))));
    }

    /// What a subscriber in `style` writes for one event of each level, a two-line one
    /// included.
    fn lines_in(style: Style) -> Vec<String> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let writer = move || Sink(sink.clone());
        let subscriber = subscriber(EnvFilter::new("trace"), writer, style);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("broken");
            tracing::warn!(key = "x.json", "careful");
            tracing::info!("mounted");
            tracing::debug!("detail");
            tracing::trace!("finer");
            tracing::warn!("first line\nsecond line");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journal_lines_start_with_their_priority_and_carry_no_timestamp() {
        let lines = lines_in(Style::Journal);
        let expected = [
            ("<3>", "broken"),
            ("<4>", "careful"),
            ("<6>", "mounted"),
            ("<7>", "detail"),
            ("<7>", "finer"),
            ("<4>", "first line"),
            ("<4>", "second line"),
        ];
        assert_eq!(lines.len(), expected.len(), "{lines:#?}");
        for (line, (prefix, message)) in lines.iter().zip(expected) {
            assert!(
                line.starts_with(prefix),
                "{line:?} should start with {prefix}"
            );
            assert!(line.contains(message), "{line:?} should say {message:?}");
            // No timestamp: the level (or the message's next line) follows the priority.
            let rest = &line[prefix.len()..];
            assert!(!rest.starts_with(|c: char| c.is_ascii_digit()), "{line:?}");
            assert!(!line.contains('\x1b'), "colour in the journal: {line:?}");
        }
        assert!(lines[1].contains("key=\"x.json\""), "{:?}", lines[1]);
        assert!(lines[2].starts_with("<6>INFO "), "{:?}", lines[2]);
    }

    #[test]
    fn plain_lines_start_with_a_timestamp_and_no_priority() {
        let lines = lines_in(Style::Plain { ansi: false });
        assert!(!lines.is_empty());
        for line in &lines[..5] {
            assert!(line.starts_with(|c: char| c.is_ascii_digit()), "{line:?}");
            assert!(!line.starts_with('<'), "{line:?}");
            assert!(!line.contains('\x1b'), "{line:?}");
        }
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
