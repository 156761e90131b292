//! FUSE-over-io_uring, the kernel transport of SPEC §15: whether this kernel offers it, the
//! structs the kernel and the daemon exchange on it ([`abi`]), one request in a ring entry
//! ([`message`]) and its reply ([`reply`]), the ring and its entries ([`ring`]), and the threads
//! that serve the rings with the filesystem ([`serve`]). It serves every op the fuser adapter
//! serves, passthrough opens included (backings shared with the adapter), with a ring and a
//! thread per queue, pinned to the queue's CPU. A mount takes it as its `transport` key says
//! (`mount::ring`). docs/uring.md says how it fits on fuser.

pub mod abi;
pub mod message;
pub mod reply;
pub mod ring;
pub mod serve;

use std::fmt;
use std::io;

/// The module parameter that gates the transport. It exists only in a kernel built with
/// `CONFIG_FUSE_IO_URING`, reads `Y` or `N`, and is read again at each mount.
pub const ENABLE_URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Present whenever the fuse module is loaded (or built in); tells "no fuse" from "no io_uring".
const FUSE_MODULE_DIR: &str = "/sys/module/fuse";

/// The first release with FUSE-over-io_uring (protocol 7.42).
pub const FIRST_RELEASE: (u32, u32) = (6, 14);

/// Why the kernel does not offer FUSE-over-io_uring. `Display` says how to get it.
#[derive(Debug)]
pub enum NotOffered {
    /// The kernel predates the transport.
    KernelTooOld { release: String },
    /// No fuse module is loaded, so there is nothing to ask.
    FuseNotLoaded,
    /// The fuse module has no `enable_uring`: built without `CONFIG_FUSE_IO_URING`.
    NotBuilt,
    /// Built in, switched off (the default).
    Disabled,
    /// The parameter exists but could not be read.
    Unreadable(io::Error),
}

impl fmt::Display for NotOffered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = FIRST_RELEASE;
        match self {
            NotOffered::KernelTooOld { release } => write!(
                f,
                "FUSE-over-io_uring needs Linux {a}.{b} or later; this kernel is {release}"
            ),
            NotOffered::FuseNotLoaded => write!(
                f,
                "the fuse kernel module is not loaded ({FUSE_MODULE_DIR} is missing): \
                 `sudo modprobe fuse`, then turn FUSE-over-io_uring on with \
                 `echo 1 | sudo tee {ENABLE_URING_PARAM}`"
            ),
            NotOffered::NotBuilt => write!(
                f,
                "this kernel's fuse module is built without CONFIG_FUSE_IO_URING \
                 ({ENABLE_URING_PARAM} is missing): FUSE-over-io_uring needs a kernel built with it"
            ),
            NotOffered::Disabled => write!(
                f,
                "FUSE-over-io_uring is built into this kernel but off: turn it on with \
                 `echo 1 | sudo tee {ENABLE_URING_PARAM}` (it applies to mounts made after that)"
            ),
            NotOffered::Unreadable(e) => write!(
                f,
                "cannot read {ENABLE_URING_PARAM} to learn whether FUSE-over-io_uring is on: {e}"
            ),
        }
    }
}

impl std::error::Error for NotOffered {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NotOffered::Unreadable(e) => Some(e),
            _ => None,
        }
    }
}

/// What the parameter file said: the inputs of [`judge`], read by [`offered`].
#[derive(Debug)]
pub enum Param {
    /// `/sys/module/fuse` is missing.
    ModuleAbsent,
    /// The module is there, the parameter is not.
    Absent,
    /// The parameter's text, as read.
    Text(String),
    /// Reading it failed otherwise.
    Unreadable(io::Error),
}

/// Whether this kernel offers FUSE-over-io_uring to a new mount now.
pub fn offered() -> Result<(), NotOffered> {
    let release = rustix::system::uname();
    judge(
        &release.release().to_string_lossy(),
        read_param(ENABLE_URING_PARAM, FUSE_MODULE_DIR),
    )
}

fn read_param(param: &str, module_dir: &str) -> Param {
    match std::fs::read_to_string(param) {
        Ok(text) => Param::Text(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if std::path::Path::new(module_dir).exists() {
                Param::Absent
            } else {
                Param::ModuleAbsent
            }
        }
        Err(e) => Param::Unreadable(e),
    }
}

/// The decision, from a `uname` release string and the parameter. The parameter is the real
/// evidence (it exists only where the transport is built); the release check is there for
/// kernels that backport neither, and gives the clearest message. A release this cannot parse
/// (a vendor's odd string) is left to the parameter.
pub fn judge(release: &str, param: Param) -> Result<(), NotOffered> {
    if let Some(version) = major_minor(release) {
        if version < FIRST_RELEASE {
            return Err(NotOffered::KernelTooOld {
                release: release.to_string(),
            });
        }
    }
    match param {
        Param::ModuleAbsent => Err(NotOffered::FuseNotLoaded),
        Param::Absent => Err(NotOffered::NotBuilt),
        Param::Unreadable(e) => Err(NotOffered::Unreadable(e)),
        // A bool module parameter reads back as `Y` or `N`, with a newline.
        Param::Text(text) if text.trim() == "Y" => Ok(()),
        Param::Text(_) => Err(NotOffered::Disabled),
    }
}

/// `6.18.44-fc-v1300` → `(6, 18)`; `None` when the release does not start with two numbers.
fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Param {
        Param::Text("Y\n".into())
    }

    #[test]
    fn offered_on_a_new_enough_kernel_with_the_parameter_on() {
        judge("6.18.44-fc-v1300", on()).unwrap();
        judge("6.14.0", on()).unwrap();
        judge("7.0.0-rc1", on()).unwrap();
    }

    #[test]
    fn parameter_off_says_how_to_turn_it_on() {
        let e = judge("6.18.44-fc-v1300", Param::Text("N\n".into())).unwrap_err();
        assert!(matches!(e, NotOffered::Disabled));
        let message = e.to_string();
        assert!(
            message.contains("echo 1 | sudo tee /sys/module/fuse/parameters/enable_uring"),
            "{message}"
        );
    }

    #[test]
    fn only_y_counts_as_on() {
        for text in ["", "N", "0", "y\n", "yes"] {
            let e = judge("6.18.0", Param::Text(text.into())).unwrap_err();
            assert!(matches!(e, NotOffered::Disabled), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_kernel_older_than_6_14_is_too_old_whatever_the_parameter() {
        for release in ["6.13.12", "6.1.0-28-amd64", "5.15.0-91-generic", "4.19.0"] {
            let e = judge(release, on()).unwrap_err();
            assert!(
                matches!(&e, NotOffered::KernelTooOld { release: r } if r == release),
                "{release}: {e}"
            );
            let message = e.to_string();
            assert!(
                message.contains("6.14") && message.contains(release),
                "{message}"
            );
        }
    }

    #[test]
    fn a_missing_parameter_means_built_without_config_fuse_io_uring() {
        let e = judge("6.18.0", Param::Absent).unwrap_err();
        assert!(matches!(e, NotOffered::NotBuilt));
        assert!(e.to_string().contains("CONFIG_FUSE_IO_URING"), "{e}");
    }

    #[test]
    fn a_missing_fuse_module_says_to_load_it() {
        let e = judge("6.18.0", Param::ModuleAbsent).unwrap_err();
        assert!(matches!(e, NotOffered::FuseNotLoaded));
        assert!(e.to_string().contains("modprobe fuse"), "{e}");
    }

    #[test]
    fn an_unparsable_release_is_left_to_the_parameter() {
        judge("custom-kernel", on()).unwrap();
        assert!(matches!(
            judge("custom-kernel", Param::Text("N".into())),
            Err(NotOffered::Disabled)
        ));
    }

    #[test]
    fn an_unreadable_parameter_keeps_its_cause() {
        let e = judge(
            "6.18.0",
            Param::Unreadable(io::Error::from(io::ErrorKind::PermissionDenied)),
        )
        .unwrap_err();
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().contains(ENABLE_URING_PARAM), "{e}");
    }

    #[test]
    fn release_parsing() {
        assert_eq!(major_minor("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(major_minor("6.14"), Some((6, 14)));
        assert_eq!(major_minor("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(major_minor("6"), None);
        assert_eq!(major_minor(""), None);
        assert_eq!(major_minor("v6.18"), None);
    }

    #[test]
    fn read_param_tells_missing_module_from_missing_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("fuse");
        let param = module.join("parameters/enable_uring");
        let (param_s, module_s) = (param.to_str().unwrap(), module.to_str().unwrap());
        assert!(matches!(read_param(param_s, module_s), Param::ModuleAbsent));
        std::fs::create_dir_all(param.parent().unwrap()).unwrap();
        assert!(matches!(read_param(param_s, module_s), Param::Absent));
        std::fs::write(&param, "N\n").unwrap();
        assert!(matches!(read_param(param_s, module_s), Param::Text(t) if t == "N\n"));
    }
}
