//! The configuration keys of `config.toml` as documentation: one table, which `cachetta.toml(5)`
//! renders and README.md shows (a test keeps the two equal). Cells are Markdown as the README
//! has them: `code`, [text](link) and plain text.

/// One row: the key or keys it documents, their default, and what they do.
pub struct KeyDoc {
    pub keys: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// The top-level keys, in the README's order.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        keys: "`backing`",
        default: "`~/.cache/cachetta`",
        meaning: "the backing dir (`--backing`); relative paths are taken from the config file's directory",
    },
    KeyDoc {
        keys: "`duration`",
        default: "`7d`",
        meaning: "age at which an entry turns stale (`--duration`)",
    },
    KeyDoc {
        keys: "`stale`",
        default: "`0s`",
        meaning: "stale window after `duration`; then the entry is expired and hidden (`--stale`)",
    },
    KeyDoc {
        keys: "`max_entry_bytes`",
        default: "`256MiB`",
        meaning: "larger entries fail with `EFBIG`; larger refresh output is a failure",
    },
    KeyDoc {
        keys: "`sync_writes`",
        default: "`false`",
        meaning: "fsync the staged file and the directory around each publish",
    },
    KeyDoc {
        keys: "`lru_entries`, `lru_bytes`",
        default: "`1024`, `64MiB`",
        meaning: "the hot set (`--lru-entries`, `--lru-bytes`)",
    },
    KeyDoc {
        keys: "`max_refreshes`",
        default: "`4`",
        meaning: "refresh commands running at once; more wait in a queue",
    },
    KeyDoc {
        keys: "`refresh_timeout`",
        default: "`60s`",
        meaning: "a refresh command is killed, with its process group, after this",
    },
    KeyDoc {
        keys: "`refresh_backoff`",
        default: "`10s`",
        meaning: "wait after a failed or declined refresh",
    },
    KeyDoc {
        keys: "`stale_if_error`",
        default: "`0s`",
        meaning: "keep an entry past its stale window while its refresh fails ([docs/cache-control.md](docs/cache-control.md))",
    },
    KeyDoc {
        keys: "`early_refresh`",
        default: "`false`",
        meaning: "refresh hot keys before they turn stale",
    },
    KeyDoc {
        keys: "`gc_interval`",
        default: "`1h`",
        meaning: "daemon gc sweep period, `0` disables",
    },
    KeyDoc {
        keys: "`watch`",
        default: "`inotify`",
        meaning: "`inotify`, `poll` (every 1 s) or `poll=200ms` (`--watch`); poll for backing dirs shared over a network filesystem: each interval it reads the other mounts' change journal and `stat`s each directory ([docs/shared.md](docs/shared.md#watch-mode-and-interval))",
    },
    KeyDoc {
        keys: "`full_scan_interval`",
        default: "`10m`",
        meaning: "with `watch = \"poll\"`, how often every entry is `stat`-ed, the one way an in-place rewrite by a program outside every mount shows in listings; `0` never (`--full-scan-interval`)",
    },
    KeyDoc {
        keys: "`metrics_addr`",
        default: "none",
        meaning: "serve Prometheus metrics at `http://ADDR/metrics`, e.g. `\"127.0.0.1:9464\"` (`--metrics-addr`); a bad address or a port in use refuses the mount ([docs/inspection.md](docs/inspection.md#metrics-over-http))",
    },
    KeyDoc {
        keys: "`transport`",
        default: "`auto`",
        meaning: "how the kernel's requests arrive (`--transport`): `auto` takes FUSE-over-io_uring where the kernel offers it (Linux ≥ 6.14 with `enable_uring` on), else `/dev/fuse`; `uring` refuses to mount without it; `classic` never asks for it ([docs/uring.md](docs/uring.md#offered-the-transport-key))",
    },
    KeyDoc {
        keys: "`refresh`, `condition`, `fill_on_miss`",
        default: "none",
        meaning: "also settable at the top level, for every key",
    },
];

/// The table as README.md shows it, header included, one line per row.
pub fn markdown_table() -> String {
    let mut table = String::from("| key | default | what it does |\n|---|---|---|\n");
    for row in KEYS {
        table.push_str(&format!(
            "| {} | {} | {} |\n",
            row.keys, row.default, row.meaning
        ));
    }
    table
}

/// The names of the keys a cell such as "`lru_entries`, `lru_bytes`" documents.
pub fn key_names(row: &KeyDoc) -> impl Iterator<Item = &'static str> {
    row.keys.split('`').skip(1).step_by(2)
}
