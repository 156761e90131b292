//! systemd's readiness protocol (`sd_notify(3)`): one datagram such as `READY=1` or
//! `STOPPING=1` sent to the socket named by `$NOTIFY_SOCKET` (a path, or an abstract name
//! written with a leading `@`).

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where systemd listens for this service's state changes.
#[derive(Debug, Clone)]
pub struct Systemd {
    addr: SocketAddr,
}

impl Systemd {
    /// The socket from `$NOTIFY_SOCKET`, which is then removed from the environment so that
    /// refresh commands do not inherit it (and cannot report on the daemon's behalf). Call it
    /// while the process has one thread: it changes the environment.
    pub fn from_env() -> Option<Systemd> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        std::env::remove_var("NOTIFY_SOCKET");
        match Systemd::parse(&value) {
            Ok(systemd) => Some(systemd),
            Err(e) => {
                tracing::warn!("ignoring NOTIFY_SOCKET={}: {e}", value.to_string_lossy());
                None
            }
        }
    }

    fn parse(value: &OsString) -> io::Result<Systemd> {
        let bytes = value.as_bytes();
        let addr = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            Some(b'/') => SocketAddr::from_pathname(value)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "only a path or an @abstract socket name is supported",
                ))
            }
        };
        Ok(Systemd { addr })
    }

    /// Send one state line (`READY=1`, `STOPPING=1`, `STATUS=...`).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }

    /// Send one state line unless systemd's queue is full (`WouldBlock` then): for `STATUS=`,
    /// which the next one replaces, so the sender is never held up by systemd.
    pub fn try_notify(&self, state: &str) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let systemd = Systemd::parse(&path.clone().into_os_string()).unwrap();
        systemd.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket_written_with_an_at_sign() {
        let name = format!("cachetta-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let systemd = Systemd::parse(&OsString::from(format!("@{name}"))).unwrap();
        systemd.notify("STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn refuses_other_address_kinds() {
        assert!(Systemd::parse(&OsString::from("vsock:2:1234")).is_err());
        assert!(Systemd::parse(&OsString::from("")).is_err());
    }
}
