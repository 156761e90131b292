//! Extended attributes: the read-only `user.cachetta.*` inspection attributes of SPEC §5
//! (computed, never stored), the mount-wide `user.cachetta.stats` on the root, and every other
//! `user.*` attribute stored on the backing file itself.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::*;
use crate::inspect::{self, Info, ATTRIBUTE_PREFIX};

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
        let st = match self.pins.lock().get(ino).map(|pin| pin.file.clone()) {
            Some(file) => Store::fstat(&*file)?,
            None => found?.0,
        };
        if st.kind != Kind::File {
            return Ok(None);
        }
        let timing = self.config.settings_for(key.as_os_str()).settings.timing();
        let info = Info::from_stat(
            &key,
            self.store.absolute(&key),
            &st,
            true,
            timing,
            self.clock.now(),
        );
        Ok(Some(self.with_refresh_state(&key, info)))
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        let key = self.path_of(ino)?;
        if ino == ROOT && name == STATS_XATTR {
            return Ok(self.stats_json().into_bytes());
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
            names.extend_from_slice(STATS_XATTR.as_bytes());
            names.push(0);
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

    /// Ours are read-only; only `user.*` names are stored.
    fn check_settable(&self, name: &OsStr) -> FsResult<()> {
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

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        let key = self.path_of(ino)?;
        self.check_settable(name)?;
        if value.len() > MAX_XATTR_VALUE {
            return Err(errno(libc::E2BIG));
        }
        self.store
            .set_xattr(&key, name, value, flags)
            .map_err(|e| FsError::io(key.display(), e))
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        let key = self.path_of(ino)?;
        self.check_settable(name)?;
        self.store
            .remove_xattr(&key, name)
            .map_err(|e| FsError::io(key.display(), e))
    }
}
