//! `mount -t fuse.cachetta BACKING MOUNTPOINT -o OPTIONS` and fstab (SPEC §14): the command
//! line of a mount helper, turned into the `cachetta mount --daemon` one before clap sees it.
//!
//! mount(8) hands a `fuse.cachetta` mount to `mount.fuse3`, which runs
//! `/bin/sh -c "'cachetta' 'BACKING' 'MOUNTPOINT' '-o' 'OPTIONS'"` with mount(8)'s cleared
//! `PATH` (so sh's default one finds `/usr/bin/cachetta`), having taken out `nofail`,
//! `_netdev` and the like; mount(8) itself keeps `noauto` and `x-*` to itself. An admin's
//! `/sbin/mount.cachetta` (or `mount.fuse.cachetta`) symlink gets mount(8)'s own helper call
//! instead, `mount.cachetta BACKING MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]`, with more of
//! mount(8)'s options left in. Both shapes end up here. Every option that is a long flag of
//! `cachetta mount` becomes that flag (as clap defines it, so a new flag works at once, and
//! clap judges its value); mount(8)'s own options are dropped, except `ro`, which is
//! `--read-only`. Anything else is refused with exit code 2 before anything is mounted.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use crate::exit_codes::Failure;

/// What every message about a mount option ends with: what the options are.
const OPTIONS_ARE: &str = "the options are the flags of `cachetta mount` without their dashes, \
     e.g. duration=1h,watch=poll,allow_other, and mount(8)'s own (rw, ro, nosuid, noauto, \
     nofail, _netdev, x-systemd.*, ...)";

/// mount(8)'s generic options, and those of its helpers, which are mount(8)'s business (or
/// mean nothing to a FUSE mount): a cachetta mount is always nosuid and nodev, the kernel's
/// default for FUSE.
const MOUNT8_OWN: &[&str] = &[
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "iversion",
    "noiversion",
    "mand",
    "nomand",
    "silent",
    "loud",
];

/// The same prefixes followed by `=VALUE`, or by anything (`x-systemd.automount`,
/// `x-gvfs-show`): options for mount(8), systemd or a file manager, never for the helper.
const MOUNT8_OWN_PREFIXES: &[&str] = &["x-", "comment=", "user=", "helper=", "uhelper="];

/// The `cachetta mount` command line for a mount helper's `args` (the whole `argv`), or `args`
/// unchanged when they are not a helper's call. `cli` is the clap definition of `cachetta`,
/// where the flags of `mount` are looked up.
pub fn helper_argv(args: Vec<OsString>, cli: &clap::Command) -> Result<Vec<OsString>, Failure> {
    if !is_helper_call(&args, cli) {
        return Ok(args);
    }
    let call = HelperCall::parse(&args[1..])?;
    let Some(mount) = cli.find_subcommand("mount") else {
        return Ok(args);
    };
    let mut argv: Vec<OsString> = vec!["cachetta".into(), "mount".into(), call.mountpoint.clone()];
    argv.extend(["--backing".into(), call.backing.clone(), "--daemon".into()]);
    for option in call.options.iter().flat_map(|o| o.split(',')) {
        match translate(option, mount) {
            Ok(flags) => argv.extend(flags.into_iter().map(OsString::from)),
            Err(refusal) if call.sloppy => eprintln!("cachetta: ignoring {refusal} (-s)"),
            Err(refusal) => return Err(Failure::usage(format_args!("{refusal}; {OPTIONS_ARE}"))),
        }
    }
    Ok(argv)
}

/// Called as `mount.cachetta`/`mount.fuse.cachetta` (a symlink mount(8) finds), or as
/// `cachetta BACKING MOUNTPOINT -o OPTIONS` (what `mount.fuse3` runs: mount(8) always passes at
/// least `rw`, so `-o` is always there; without it, a mistyped command stays clap's error).
fn is_helper_call(args: &[OsString], cli: &clap::Command) -> bool {
    let called_as = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(OsStr::to_str)
        .unwrap_or("");
    if called_as.starts_with("mount.") {
        return true;
    }
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return false;
    };
    !first.starts_with('-')
        && cli.find_subcommand(first).is_none()
        && args[2..].iter().any(|a| a == "-o")
}

/// The parts of a helper's command line.
#[derive(Debug, PartialEq)]
struct HelperCall {
    backing: OsString,
    mountpoint: OsString,
    /// Every `-o` argument, in order.
    options: Vec<String>,
    /// `-s`: drop unknown options with a warning instead of failing.
    sloppy: bool,
}

impl HelperCall {
    /// `BACKING MOUNTPOINT [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]`, mount(8)'s helper syntax.
    fn parse(args: &[OsString]) -> Result<HelperCall, Failure> {
        let usage = |problem: String| {
            Failure::usage(format_args!(
                "{problem} (mount helper usage: BACKING MOUNTPOINT [-o OPTIONS])"
            ))
        };
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut sloppy = false;
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let text = arg.to_string_lossy();
            match text.as_ref() {
                "-o" | "-t" => {
                    let value = rest
                        .next()
                        .ok_or_else(|| usage(format!("{text} needs a value")))?;
                    if text == "-o" {
                        let value = value
                            .to_str()
                            .ok_or_else(|| usage("the mount options are not UTF-8".into()))?;
                        options.push(value.to_owned());
                    }
                }
                // Nothing to do: cachetta never writes /etc/mtab, and mount(8)'s -v is its own.
                "-n" | "-v" => {}
                "-s" => sloppy = true,
                "-f" => return Err(usage("a fake mount (-f) is not supported".into())),
                "-N" => {
                    return Err(usage(
                        "mounting in another namespace (-N) is not supported".into(),
                    ))
                }
                _ if text.starts_with('-') => return Err(usage(format!("unexpected {text}"))),
                _ => positional.push(arg.clone()),
            }
        }
        let [backing, mountpoint]: [OsString; 2] = positional
            .try_into()
            .map_err(|p: Vec<_>| usage(format!("expected 2 arguments, got {}", p.len())))?;
        // `mount.fuse3 -o drop_privileges` mounts by itself and passes the connection as
        // `/dev/fd/N`; cachetta mounts by itself, so the two would fight over the mountpoint.
        if Path::new(&mountpoint).starts_with("/dev/fd") {
            return Err(Failure::usage(
                "drop_privileges is not supported: cachetta mounts by itself; leave it out",
            ));
        }
        Ok(HelperCall {
            backing,
            mountpoint,
            options,
            sloppy,
        })
    }
}

/// The `cachetta mount` flags for one mount option (none for mount(8)'s own), or what is wrong
/// with it.
fn translate(option: &str, mount: &clap::Command) -> Result<Vec<String>, String> {
    if option.is_empty() || is_mount8_own(option) {
        return Ok(Vec::new());
    }
    if option == "ro" {
        return Ok(vec!["--read-only".into()]);
    }
    let (name, value) = match option.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (option, None),
    };
    let long = name.replace('_', "-");
    // `daemon` is what a helper does anyway; `help` and `version` would print and mount nothing.
    if long == "daemon" {
        return Ok(Vec::new());
    }
    let flag = mount
        .get_arguments()
        .filter(|arg| !arg.is_positional() && !arg.is_hide_set())
        .find(|arg| {
            arg.get_long() == Some(long.as_str()) && !matches!(long.as_str(), "help" | "version")
        })
        .ok_or_else(|| format!("unknown mount option {name:?}"))?;
    let takes_value = flag.get_action().takes_values();
    match (takes_value, value) {
        (true, Some(value)) => Ok(vec![format!("--{long}"), value.to_owned()]),
        (true, None) => Err(format!("mount option {name:?} needs a value ({name}=...)")),
        (false, None) => Ok(vec![format!("--{long}")]),
        (false, Some(_)) => Err(format!("mount option {name:?} takes no value")),
    }
}

fn is_mount8_own(option: &str) -> bool {
    MOUNT8_OWN.contains(&option) || MOUNT8_OWN_PREFIXES.iter().any(|p| option.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit_codes::ExitCode;
    use clap::CommandFactory;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn helper(args: &[&str]) -> Result<Vec<String>, Failure> {
        let out = helper_argv(argv(args), &crate::cli::Cli::command())?;
        Ok(out.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    fn expect(args: &[&str], want: &[&str]) {
        assert_eq!(helper(args).unwrap(), want, "{args:?}");
    }

    #[test]
    fn mount_fuse3_call_becomes_a_daemon_mount_with_its_flags() {
        expect(
            &[
                "cachetta",
                "/srv/cache",
                "/srv/view",
                "-o",
                "rw,nosuid,nodev,duration=1h,allow_other",
            ],
            &[
                "cachetta",
                "mount",
                "/srv/view",
                "--backing",
                "/srv/cache",
                "--daemon",
                "--duration",
                "1h",
                "--allow-other",
            ],
        );
    }

    #[test]
    fn underscores_and_hyphens_both_name_a_flag_and_values_keep_their_equals_signs() {
        expect(
            &[
                "cachetta",
                "b",
                "m",
                "-o",
                "lru_entries=5,lru-bytes=1MiB,watch=poll=2s,allow-non-empty,transport=uring",
            ],
            &[
                "cachetta",
                "mount",
                "m",
                "--backing",
                "b",
                "--daemon",
                "--lru-entries",
                "5",
                "--lru-bytes",
                "1MiB",
                "--watch",
                "poll=2s",
                "--allow-non-empty",
                "--transport",
                "uring",
            ],
        );
    }

    #[test]
    fn mount8_options_are_dropped_and_ro_is_read_only() {
        expect(
            &[
                "/sbin/mount.fuse.cachetta", "b", "m", "-o",
                "defaults,noauto,nofail,_netdev,x-systemd.automount,x-systemd.idle-timeout=60,comment=x,ro,noatime,daemon",
                "-t", "fuse.cachetta", "-n", "-v",
            ],
            &["cachetta", "mount", "m", "--backing", "b", "--daemon", "--read-only"],
        );
    }

    #[test]
    fn called_as_mount_cachetta_without_options_still_mounts() {
        expect(
            &["mount.cachetta", "b", "m"],
            &["cachetta", "mount", "m", "--backing", "b", "--daemon"],
        );
    }

    #[test]
    fn ordinary_command_lines_are_left_to_clap() {
        for args in [
            &["cachetta", "mount", "m", "-o"][..],
            &["cachetta", "mout", "/x"],
            &["cachetta", "--help"],
            &["cachetta"],
        ] {
            expect(args, args);
        }
    }

    #[test]
    fn unknown_options_are_refused_with_exit_2_naming_them() {
        for (options, named) in [
            ("rw,colour=blue", "\"colour\""),
            ("default_permissions", "\"default_permissions\""),
            ("help", "\"help\""),
            ("mountpoint=/x", "\"mountpoint\""),
            ("duration", "duration=..."),
            ("allow_other=yes", "takes no value"),
        ] {
            let failure = helper(&["cachetta", "b", "m", "-o", options]).unwrap_err();
            assert_eq!(failure.code, ExitCode::Usage, "{options}");
            assert!(
                failure.message.contains(named),
                "{options}: {}",
                failure.message
            );
        }
    }

    #[test]
    fn sloppy_drops_unknown_options() {
        expect(
            &[
                "mount.cachetta",
                "b",
                "m",
                "-s",
                "-o",
                "colour=blue,duration=1h",
            ],
            &[
                "cachetta",
                "mount",
                "m",
                "--backing",
                "b",
                "--daemon",
                "--duration",
                "1h",
            ],
        );
    }

    #[test]
    fn malformed_helper_calls_are_refused_with_exit_2() {
        for args in [
            &["mount.cachetta", "b"][..],
            &["mount.cachetta", "b", "m", "extra"],
            &["mount.cachetta", "b", "m", "-o"],
            &["mount.cachetta", "b", "m", "-f"],
            &["mount.cachetta", "b", "m", "-N", "/proc/1/ns/mnt"],
            &["cachetta", "b", "/dev/fd/3", "-o", "rw"],
        ] {
            let failure = helper(args).unwrap_err();
            assert_eq!(failure.code, ExitCode::Usage, "{args:?}");
        }
    }

    #[test]
    fn a_bad_value_is_left_for_clap_to_refuse_with_exit_2() {
        let args = helper(&["cachetta", "b", "m", "-o", "duration=banana"]).unwrap();
        let err = crate::cli::Cli::command()
            .try_get_matches_from(args)
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("--duration") && text.contains("banana"),
            "{text}"
        );
    }
}
