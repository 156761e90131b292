//! Tests of the adapter's helpers.

use super::*;
use fuser::FopenFlags;

#[test]
fn a_panicking_handler_is_caught_and_the_thread_goes_on() {
    let mut after = false;
    caught("test", || panic!("a bug in a handler"));
    caught("test", || after = true);
    assert!(after);
}

#[test]
fn xattr_size_protocol() {
    let value = || Ok(b"abc".to_vec());
    assert_eq!(xattr_answer("getxattr", 0, value()), XattrAnswer::Size(3));
    assert_eq!(
        xattr_answer("getxattr", 2, value()),
        XattrAnswer::Error(Errno::ERANGE)
    );
    assert_eq!(
        xattr_answer("getxattr", 3, value()),
        XattrAnswer::Value(b"abc".to_vec())
    );
    let missing = Err(crate::error::FsError::new(
        libc::ENODATA,
        "no such attribute",
    ));
    assert_eq!(
        xattr_answer("getxattr", 0, missing),
        XattrAnswer::Error(Errno::ENODATA)
    );
}

#[test]
fn open_flags_by_mode() {
    let opened = |mode, noflush| Opened {
        fh: 1,
        ino: 2,
        mode,
        noflush,
    };
    assert_eq!(
        open_flags(&opened(OpenMode::DirectIo, true)),
        Some(FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH)
    );
    assert_eq!(
        open_flags(&opened(OpenMode::PageCache { keep: true }, false)),
        Some(FopenFlags::FOPEN_KEEP_CACHE)
    );
    assert_eq!(
        open_flags(&opened(OpenMode::PageCache { keep: false }, false)),
        Some(FopenFlags::empty())
    );
    let file = Arc::new(tempfile::tempfile().unwrap());
    let passthrough = OpenMode::Passthrough {
        file,
        generation: 1,
    };
    assert_eq!(open_flags(&opened(passthrough, false)), None);
}
