//! What is in a backing file: JSON validation (streamed, or in memory within a bounded
//! budget for a reader who waits), reading with a limit, and copying content and `user.*`
//! attributes into a staging file.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Whether `bytes` is one complete JSON value in UTF-8 (surrounding whitespace allowed).
pub fn is_valid_json(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
        Err(_) => false,
    }
}

/// Whether a file holds one complete JSON value in UTF-8, read from offset 0 in chunks (a
/// large entry is never held in memory whole). `EFBIG` past `limit` bytes.
pub fn file_is_valid_json(file: &File, limit: u64) -> io::Result<bool> {
    file_is_valid_json_sized(file, limit, None)
}

/// [`file_is_valid_json`] of a file whose size the caller knows (`None`: asked here), which
/// only sizes the read buffer.
pub fn file_is_valid_json_sized(file: &File, limit: u64, size: Option<u64>) -> io::Result<bool> {
    let size = size.unwrap_or_else(|| file.metadata().map_or(0, |m| m.len()));
    if size <= WHOLE.min(limit) {
        // Most entries are a few KiB: read whole and parsed from memory, where serde_json's
        // reader of a stream goes byte by byte (10 % of the daemon's time in a write storm).
        if let Some(bytes) = read_small(file, size, WHOLE.min(limit))? {
            return Ok(is_valid_json(&bytes));
        }
        // It grew past that since its size was taken: streamed after all.
    }
    streamed_is_valid_json(file, limit, size)
}

/// [`file_is_valid_json`] for a reader who waits for the answer (a lookup that judges an
/// entry for the first time): whole in memory while the process-wide budget allows
/// ([`InMemory`]), since serde_json parses a slice twenty times as fast as a stream (a 256 MiB
/// entry: 60 ms against 0.92 s). Writes and refresh output, which nobody reads yet, stay
/// streamed: a refresh command's output never costs the daemon its size in memory.
/// `size` is what the caller's `fstat` said (it only sizes the read).
pub fn file_is_valid_json_now(file: &File, limit: u64, size: u64) -> io::Result<bool> {
    let reserved = (size > WHOLE && size <= limit)
        .then(|| InMemory::reserve(size))
        .flatten();
    if let Some(_held) = reserved {
        if let Some(bytes) = read_small(file, size, size)? {
            return Ok(is_valid_json(&bytes));
        }
        // It grew since its size was taken: streamed after all.
    }
    file_is_valid_json_sized(file, limit, Some(size))
}

/// [`file_is_valid_json`] in chunks, with a read buffer sized for `size` bytes.
fn streamed_is_valid_json(file: &File, limit: u64, size: u64) -> io::Result<bool> {
    let checked = Utf8Checked {
        file,
        pos: 0,
        limit,
        pending: [0; 4],
        pending_len: 0,
        invalid: false,
    };
    let capacity = (size as usize).saturating_add(1).clamp(4096, 256 * 1024);
    let mut reader = io::BufReader::with_capacity(capacity, checked);
    let parsed = serde_json::from_reader::<_, serde::de::IgnoredAny>(&mut reader);
    let checked = reader.into_inner();
    if let Err(e) = &parsed {
        if let Some(kind) = e.io_error_kind() {
            if checked.pos > limit {
                return Err(io::Error::from_raw_os_error(libc::EFBIG));
            }
            return Err(io::Error::from(kind));
        }
    }
    Ok(parsed.is_ok() && !checked.invalid && checked.pending_len == 0)
}

/// Bytes of entries being judged in memory at once, in the whole process: at most an eighth of
/// the machine's memory and 256 MiB. Past that, entries are judged streamed.
struct InMemory(u64);

static IN_MEMORY: AtomicU64 = AtomicU64::new(0);

impl InMemory {
    fn budget() -> u64 {
        static BUDGET: OnceLock<u64> = OnceLock::new();
        *BUDGET.get_or_init(|| {
            let info = rustix::system::sysinfo();
            let total = (info.totalram as u64).saturating_mul(u64::from(info.mem_unit));
            (total / 8).min(256 << 20)
        })
    }

    /// Room for a file of `size` bytes, if the budget has it.
    fn reserve(size: u64) -> Option<InMemory> {
        let budget = Self::budget();
        IN_MEMORY
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(size).filter(|&total| total <= budget)
            })
            .ok()
            .map(|_| InMemory(size))
    }
}

impl Drop for InMemory {
    fn drop(&mut self) {
        IN_MEMORY.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// Reads a file from offset 0 and checks, on the way, that the bytes are UTF-8 (serde_json's
/// streaming parser does not look inside strings it skips).
/// Files up to this size are checked in memory ([`file_is_valid_json_sized`]).
const WHOLE: u64 = 64 * 1024;

/// The whole of `file` from offset 0 if it holds at most `max` bytes; `None` if it holds more.
/// `size` is what it is expected to hold (one read, and one more to see the end).
fn read_small(file: &File, size: u64, max: u64) -> io::Result<Option<Vec<u8>>> {
    let max = max as usize;
    let mut buf = vec![0u8; (size as usize).min(max) + 1];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len > max {
                return Ok(None);
            }
            buf.resize((len * 2).max(4096).min(max + 1), 0);
        }
        let n = file.read_at(&mut buf[len..], len as u64)?;
        if n == 0 {
            buf.truncate(len);
            return Ok(Some(buf));
        }
        len += n;
    }
}

struct Utf8Checked<'a> {
    file: &'a File,
    pos: u64,
    limit: u64,
    /// The start of a character cut by the end of the last chunk.
    pending: [u8; 4],
    pending_len: usize,
    invalid: bool,
}

impl Utf8Checked<'_> {
    fn check(&mut self, mut bytes: &[u8]) {
        while self.pending_len > 0 && !bytes.is_empty() && !self.invalid {
            self.pending[self.pending_len] = bytes[0];
            self.pending_len += 1;
            bytes = &bytes[1..];
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() || self.pending_len == 4 => self.invalid = true,
                Err(_) => {}
            }
        }
        if self.invalid || self.pending_len > 0 {
            return;
        }
        if let Err(e) = std::str::from_utf8(bytes) {
            match e.error_len() {
                Some(_) => self.invalid = true,
                None => {
                    let rest = &bytes[e.valid_up_to()..];
                    self.pending[..rest.len()].copy_from_slice(rest);
                    self.pending_len = rest.len();
                }
            }
        }
    }
}

impl io::Read for Utf8Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        if self.pos > self.limit {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        self.check(&buf[..n]);
        Ok(n)
    }
}

/// Read a whole file from offset 0, failing with `EFBIG` past `limit` bytes.
pub fn read_all(file: &File, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(buf);
        }
        if buf.len() as u64 + n as u64 > limit {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The whole of a variable-size extended-attribute read (a value or a list of names): `read`
/// is tried with a growing buffer until it fits (`ERANGE` means it did not; one attribute
/// holds at most 64 KiB).
pub fn read_xattr(read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => {
                buf.resize(buf.len() * 16, 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Copy the `user.*` extended attributes of `from` onto `to` (best effort: a filesystem
/// without user xattrs has none to copy).
pub fn copy_user_xattrs(from: &File, to: &File) {
    let Ok(names) = read_xattr(|buf| rustix::fs::flistxattr(from, buf)) else {
        return;
    };
    for name in names.split(|&b| b == 0).filter(|n| n.starts_with(b"user.")) {
        let name = OsStr::from_bytes(name);
        if let Ok(value) = read_xattr(|buf| rustix::fs::fgetxattr(from, name, buf)) {
            let _ = rustix::fs::fsetxattr(to, name, &value, rustix::fs::XattrFlags::empty());
        }
    }
}

/// Copy all of `from` into `to` (both from offset 0), in the kernel where it can.
pub fn copy_contents(from: &File, to: &File) -> io::Result<u64> {
    let mut off_in = 0u64;
    let mut off_out = 0u64;
    loop {
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), 1 << 30)
        {
            Ok(0) => return Ok(off_out),
            Ok(_) => {}
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS)
                if off_out == 0 =>
            {
                let mut buf = vec![0u8; 64 * 1024];
                let mut pos = 0u64;
                loop {
                    let n = from.read_at(&mut buf, pos)?;
                    if n == 0 {
                        return Ok(pos);
                    }
                    to.write_all_at(&buf[..n], pos)?;
                    pos += n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
