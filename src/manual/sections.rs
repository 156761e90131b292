//! The sections of the man pages that clap knows nothing of: ENVIRONMENT and FILES (each page
//! lists what its command reads), EXIT STATUS (from [`ExitCode`]) and SEE ALSO; and Markdown's
//! `code` and [links](...) as roff, for text kept in Markdown (the config keys' table).

use roff::{bold, roman, Inline, Roff};

use crate::exit_codes::ExitCode;

/// A variable or file and what cachetta does with it. `pages` are the commands whose pages
/// list it (empty: every page); the top page `cachetta(1)` lists everything.
struct Described {
    name: &'static str,
    pages: &'static [&'static str],
    text: &'static str,
}

/// Commands that run refresh commands (directly or through the mount's daemon).
const REFRESHING: &[&str] = &["mount", "refresh", "toml"];
/// Commands that look for a mount at `~/.cachetta` by default.
const MOUNTED: &[&str] = &["mount", "unmount", "refresh", "stats"];
/// Commands that read the configuration and the backing dir.
const CONFIGURED: &[&str] = &["mount", "ls", "info", "gc", "toml"];

const ENVIRONMENT: &[Described] = &[
    Described {
        name: "HOME",
        pages: &[],
        text: "The default mountpoint ~/.cachetta, and the base of the XDG directories below \
               when they are not set.",
    },
    Described {
        name: "XDG_CONFIG_HOME",
        pages: CONFIGURED,
        text: "The config file is $XDG_CONFIG_HOME/cachetta/config.toml (default \
               ~/.config/cachetta/config.toml) unless --config names another.",
    },
    Described {
        name: "XDG_CACHE_HOME",
        pages: CONFIGURED,
        text: "The default backing dir is $XDG_CACHE_HOME/cachetta (default ~/.cache/cachetta).",
    },
    Described {
        name: "XDG_STATE_HOME",
        pages: &["mount"],
        text: "With --daemon, the default log file is $XDG_STATE_HOME/cachetta/cachetta.log \
               (default ~/.local/state/cachetta/cachetta.log).",
    },
    Described {
        name: "CACHETTA_LOG, RUST_LOG",
        pages: &["mount"],
        text: "A log filter such as cachetta=debug,fuser=info, instead of the level -v and -q \
               choose; CACHETTA_LOG is read first.",
    },
    Described {
        name: "NOTIFY_SOCKET",
        pages: &["mount"],
        text: "Set by systemd for a Type=notify unit: the mount reports READY=1 once it \
               answers, STATUS= with its hit ratio, entries in memory and refreshes under way \
               every few seconds, and STOPPING=1 when it stops. Removed from the environment of \
               refresh commands.",
    },
    Described {
        name: "JOURNAL_STREAM",
        pages: &["mount"],
        text: "Set by systemd when stderr is the journal (DEV:INODE). When it names stderr's \
               device and inode, log lines carry their syslog priority (<3> error, <4> warning, \
               <6> info, <7> debug) and no timestamp, so journalctl -p warning finds warnings.",
    },
    Described {
        name: "NO_COLOR",
        pages: &["mount"],
        text: "Set and not empty: log lines on a terminal are not coloured.",
    },
    Described {
        name: "CACHETTA_PASSTHROUGH",
        pages: &["mount"],
        text: "0 turns kernel FUSE passthrough off: entry reads then go through the daemon.",
    },
    Described {
        name: "CACHETTA_KEY, CACHETTA_NAME, CACHETTA_ENTRY, CACHETTA_REASON, CACHETTA_<CAPTURE>",
        pages: REFRESHING,
        text: "Set for each refresh command: the key (weather/paris.json), its file name \
               without .json, the entry's path in the backing dir, why it runs, and each \
               {capture} of the rule's match pattern in upper case. Keys reach commands only \
               this way, never pasted into the command.",
    },
];

const FILES: &[Described] = &[
    Described {
        name: "$XDG_CONFIG_HOME/cachetta/config.toml",
        pages: CONFIGURED,
        text: "The configuration, see cachetta.toml(5).",
    },
    Described {
        name: "~/.cachetta",
        pages: MOUNTED,
        text: "The default mountpoint.",
    },
    Described {
        name: "$XDG_CACHE_HOME/cachetta",
        pages: CONFIGURED,
        text: "The default backing dir: every entry is a plain JSON file there.",
    },
    Described {
        name: "BACKING/.cachetta/journal",
        pages: &["mount", "gc"],
        text: "The change journal of mounts with --watch poll, shared by every mount of the \
               backing dir.",
    },
    Described {
        name: "$XDG_STATE_HOME/cachetta/cachetta.log",
        pages: &["mount"],
        text: "The log of cachetta mount --daemon, unless --log-file names another.",
    },
    Described {
        name: "/etc/fstab",
        pages: &["mount"],
        text: "A line BACKING MOUNTPOINT fuse.cachetta OPTIONS 0 0 mounts with mount -a, \
               mount MOUNTPOINT or systemd at boot, as mount -t fuse.cachetta BACKING \
               MOUNTPOINT -o OPTIONS does: cachetta mount --daemon with each option a flag \
               without its dashes (duration=1h,watch=poll,allow_other); mount(8)'s own \
               options (rw, nosuid, noauto, nofail, _netdev, x-systemd.*) are left to it, \
               anything else fails with exit code 2. umount MOUNTPOINT stops the daemon.",
    },
    Described {
        name: "/sys/module/fuse/parameters/enable_uring",
        pages: &["mount"],
        text: "Y when the kernel (Linux 6.14 or later) offers FUSE-over-io_uring to new \
               mounts, which --transport auto (the default) then takes and --transport uring \
               requires; root turns it on with echo 1 > /sys/module/fuse/parameters/enable_uring.",
    },
    Described {
        name: "/usr/lib/systemd/user/cachetta.service",
        pages: &["mount", "unmount"],
        text: "The systemd user unit that mounts ~/.cachetta at login: \
               systemctl --user enable --now cachetta (scripts/install.sh puts it in \
               ~/.config/systemd/user instead).",
    },
];

/// ENVIRONMENT, FILES, EXIT STATUS and SEE ALSO for the page of `command` (None: the top
/// page; "toml": cachetta.toml(5)); `all` names every command.
pub(super) fn for_command(command: Option<&str>, all: &[String]) -> Roff {
    let mut roff = Roff::new();
    described(&mut roff, "ENVIRONMENT", ENVIRONMENT, command);
    described(&mut roff, "FILES", FILES, command);
    exit_status(&mut roff, command);
    see_also(&mut roff, command, all);
    roff
}

fn described(roff: &mut Roff, heading: &str, items: &[Described], command: Option<&str>) {
    let listed = items.iter().filter(|item| match command {
        None => true,
        Some(command) => item.pages.is_empty() || item.pages.contains(&command),
    });
    roff.control("SH", [heading]);
    for item in listed {
        roff.control("TP", []);
        roff.text([bold(item.name)]);
        roff.text([roman(item.text)]);
    }
}

fn exit_status(roff: &mut Roff, command: Option<&str>) {
    roff.control("SH", ["EXIT STATUS"]);
    if command == Some("toml") {
        roff.text([roman(
            "Every cachetta command exits with status 2, naming the file, line and key, when \
             the config file is invalid (an unknown key, a bad value) or a file named with \
             --config is missing. Otherwise:",
        )]);
    }
    for code in ExitCode::ALL {
        roff.control("TP", []);
        roff.text([bold(code.code().to_string())]);
        roff.text([roman(code.meaning())]);
    }
}

fn see_also(roff: &mut Roff, command: Option<&str>, all: &[String]) {
    let mut pages: Vec<String> = Vec::new();
    if command.is_some() {
        pages.push("cachetta(1)".to_owned());
    }
    for name in all {
        if command != Some(name) {
            pages.push(format!("cachetta-{name}(1)"));
        }
    }
    if command != Some("toml") {
        pages.push("cachetta.toml(5)".to_owned());
    }
    pages.extend(["fusermount3(1)", "getfattr(1)", "systemctl(1)"].map(String::from));
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        let (name, section) = page.split_once('(').expect("a page is name(section)");
        line.push(bold(name));
        line.push(roman(format!("({section}")));
    }
    roff.text(line);
}

/// Markdown text (`code`, [text](link), plain) as roff: code in bold, a link as its text.
pub(super) fn markdown(text: &str) -> Vec<Inline> {
    let mut inlines = Vec::new();
    let mut plain = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match c {
            '`' => match rest[1..].split_once('`') {
                Some((code, after)) => {
                    inlines.push(roman(std::mem::take(&mut plain)));
                    inlines.push(bold(code));
                    rest = after;
                }
                None => {
                    plain.push(c);
                    rest = &rest[1..];
                }
            },
            '[' => match link(rest) {
                Some((label, after)) => {
                    inlines.push(roman(std::mem::take(&mut plain)));
                    inlines.extend(markdown(label));
                    rest = after;
                }
                None => {
                    plain.push(c);
                    rest = &rest[1..];
                }
            },
            _ => {
                plain.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    inlines.push(roman(plain));
    inlines.retain(|inline| !matches!(inline, Inline::Roman(text) if text.is_empty()));
    inlines
}

/// `[label](target)rest` as `(label, rest)`.
fn link(text: &str) -> Option<(&str, &str)> {
    let (label, after) = text.strip_prefix('[')?.split_once("](")?;
    let (_target, rest) = after.split_once(')')?;
    Some((label, rest))
}
