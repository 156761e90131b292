//! Extended attributes: the `user.cachetta.*` inspection attributes of SPEC §5 (computed), the
//! per-entry policy attributes of SPEC §12 (settable, stored on the backing file as decimal
//! seconds), the mount-wide `user.cachetta.stats` and `user.cachetta.refresh` on the root, and
//! every other `user.*` attribute stored on the backing file itself.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::*;
use crate::entry_policy::{self, EntryPolicy};
use crate::inspect::{self, Info, ATTRIBUTE_PREFIX};

/// Set on the mount root to refresh a key now (SPEC §12): `setfattr -n user.cachetta.refresh -v
/// KEY MOUNTPOINT`; read, the keys refreshed on demand lately and how they went.
pub const REFRESH_XATTR: &str = "user.cachetta.refresh";

/// Largest value `setxattr` stores (the kernel's own limit for one attribute).
const MAX_XATTR_VALUE: usize = 64 * 1024;

fn is_ours(name: &OsStr) -> bool {
    name.as_bytes().starts_with(ATTRIBUTE_PREFIX.as_bytes())
}

/// Other namespaces (`security.`, `trusted.`, `system.`) are not ours to pass through.
fn is_user(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"user.")
}

impl CacheFs {
    /// The `info` of a visible entry, as its readers see it (a pinned version if open).
    pub fn entry_info(&self, ino: u64) -> FsResult<Option<Info>> {
        let key = self.path_of(ino)?;
        if !store::is_entry_name(key.file_name().unwrap_or_default()) {
            return Ok(None);
        }
        let found = self.visible(&key);
        // Bound first: the mount-wide `pins` lock must not be held across the `fstat` and
        // `fgetxattr` below (a network round trip on a shared backing dir).
        let pinned = self.pins.lock().get(ino).map(|pin| pin.file.clone());
        let (st, policy) = match pinned {
            Some(file) => (Store::fstat(&*file)?, EntryPolicy::of_file(&*file)),
            None => {
                let st = found?.0;
                let policy = self.policy_of(&st, None).unwrap_or_default();
                (st, policy)
            }
        };
        if st.kind != Kind::File {
            return Ok(None);
        }
        let info = Info::from_stat(
            &key,
            self.store.absolute(&key),
            &st,
            true,
            self.timing_of(&key, &policy),
            self.clock.now(),
        )
        .with_overrides(&policy);
        Ok(Some(self.with_refresh_state(&key, info)))
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        let key = self.path_of(ino)?;
        if ino == ROOT && name == STATS_XATTR {
            return Ok(self.stats_json().into_bytes());
        }
        if ino == ROOT && name == REFRESH_XATTR {
            return Ok(self.demanded_json().into_bytes());
        }
        if is_ours(name) {
            let info = self.entry_info(ino)?.ok_or_else(|| errno(libc::ENODATA))?;
            return inspect::attributes(&info)
                .into_iter()
                .find(|(n, _)| name == *n)
                .map(|(_, value)| value)
                .ok_or_else(|| errno(libc::ENODATA));
        }
        if !is_user(name) {
            // security.*, system.posix_acl_*: not stored here. ENOTSUP (not ENODATA) lets
            // `ls -l` remember that per filesystem instead of asking for every file.
            return Err(errno(libc::ENOTSUP));
        }
        self.store
            .get_xattr(&key, name)
            .map_err(|e| FsError::io(key.display(), e))
    }

    /// NUL-separated names: ours first, then the backing file's own `user.*` attributes.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let key = self.path_of(ino)?;
        let mut names = Vec::new();
        if ino == ROOT {
            for name in [STATS_XATTR, REFRESH_XATTR] {
                names.extend_from_slice(name.as_bytes());
                names.push(0);
            }
        }
        if let Ok(Some(info)) = self.entry_info(ino) {
            for (name, _) in inspect::attributes(&info) {
                names.extend_from_slice(name.as_bytes());
                names.push(0);
            }
        }
        match self.store.list_xattr(&key) {
            Ok(stored) => {
                for name in stored.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    let name = OsStr::from_bytes(name);
                    if is_user(name) && !is_ours(name) {
                        names.extend_from_slice(name.as_bytes());
                        names.push(0);
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => return Err(FsError::io(key.display(), e)),
        }
        Ok(names)
    }

    /// Ours are read-only, except the policy attributes of an entry; only `user.*` names are
    /// stored.
    fn check_settable(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        if entry_policy::is_policy_attribute(name) {
            self.writable()?;
            return match self.entry_info(ino)? {
                Some(info) if info.is_visible() => Ok(()),
                _ => Err(FsError::new(
                    libc::EPERM,
                    "policy attributes are set on entries (*.json files)",
                )),
            };
        }
        if is_ours(name) {
            return Err(FsError::new(
                libc::EPERM,
                "user.cachetta.* attributes are read-only",
            ));
        }
        self.writable()?;
        if !is_user(name) {
            return Err(errno(libc::ENOTSUP));
        }
        Ok(())
    }

    pub fn setxattr(
        self: &Arc<Self>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> FsResult<()> {
        let key = self.path_of(ino)?;
        if ino == ROOT && name == REFRESH_XATTR {
            return self.refresh_on_demand(value);
        }
        self.check_settable(ino, name)?;
        if value.len() > MAX_XATTR_VALUE {
            return Err(errno(libc::E2BIG));
        }
        let stored;
        let value = if entry_policy::is_policy_attribute(name) {
            stored = entry_policy::stored_value(value).map_err(|problem| {
                FsError::new(
                    libc::EINVAL,
                    format!("{}: {problem}", name.to_string_lossy()),
                )
            })?;
            stored.as_bytes()
        } else {
            value
        };
        let _publishes_wait = self.lock_for_policy(&key, name);
        self.store
            .set_xattr(&key, name, value, flags)
            .map_err(|e| FsError::io(key.display(), e))?;
        self.policy_changed(ino, &key, name);
        Ok(())
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        let key = self.path_of(ino)?;
        self.check_settable(ino, name)?;
        let _publishes_wait = self.lock_for_policy(&key, name);
        self.store
            .remove_xattr(&key, name)
            .map_err(|e| FsError::io(key.display(), e))?;
        self.policy_changed(ino, &key, name);
        Ok(())
    }

    /// A policy attribute changes under the key's lock, which every publish of the key takes
    /// (`crate::publish`): a write or refresh that carries the entry's policy onto its new
    /// content does so wholly before this change or wholly after it, so it never undoes it.
    fn lock_for_policy(&self, key: &Path, name: &OsStr) -> Option<store::KeyGuard<'_>> {
        entry_policy::is_policy_attribute(name).then(|| self.store.lock_key(key))
    }

    /// After a policy attribute changed: the entry's state may have (a shorter duration can
    /// make it stale or hidden), so what the kernel caches of it goes (it would anyway within
    /// the 1 s of SPEC §2).
    fn policy_changed(&self, ino: u64, key: &Path, name: &OsStr) {
        if entry_policy::is_policy_attribute(name) {
            debug!(key = %key.display(), name = %name.to_string_lossy(), "entry policy changed");
            // The change moved the file's ctime, so its version is new, unless two changes
            // fell in one tick of the filesystem's clock: then the version is the one whose
            // policy was remembered before. What the file says now is what is remembered.
            if let Ok((file, st)) = self.store.open_file(key, OFlags::RDONLY, Mode::empty()) {
                let policy = EntryPolicy::of_file(&file);
                self.learn(st.version(), None, Some(policy));
            }
            self.invalidate_attributes(ino);
        }
    }

    /// `setfattr -n user.cachetta.refresh -v KEY MOUNTPOINT`: start KEY's refresh now, even
    /// during its backoff, joining one that runs; the entry keeps being served meanwhile. A key
    /// no refresh rule covers is `EINVAL`.
    fn refresh_on_demand(self: &Arc<Self>, value: &[u8]) -> FsResult<()> {
        let text = std::str::from_utf8(value).map_err(|_| errno(libc::EINVAL))?;
        let key = inspect::relative_key(Path::new(text.trim_end_matches(['\n', '\0'])))
            .filter(|key| store::is_entry_name(key.file_name().unwrap_or_default()))
            .ok_or_else(|| FsError::new(libc::EINVAL, format!("{text:?} is not an entry key")))?;
        if self
            .config
            .settings_for(key.as_os_str())
            .settings
            .refresh
            .is_none()
        {
            return Err(FsError::new(
                libc::EINVAL,
                format!(
                    "{}: no rule gives this key a refresh command",
                    key.display()
                ),
            ));
        }
        self.demand(&key);
        Ok(())
    }
}
