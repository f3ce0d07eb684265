//! A TCP client socket bound before it connects: to a chosen source port (reusable, so
//! consecutive tests can take it again) or a chosen source address.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    os::fd::{FromRawFd as _, OwnedFd},
    time::Duration,
};

/// A bound, not yet connected, TCP socket.
pub struct BoundTcp(OwnedFd);

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

impl BoundTcp {
    /// A socket bound to `addr` (port 0: any), with SO_REUSEADDR.
    pub fn bind(addr: SocketAddrV4) -> io::Result<BoundTcp> {
        // SAFETY: a plain socket call; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor of ours.
        let socket = BoundTcp(unsafe { OwnedFd::from_raw_fd(fd) });
        let one: libc::c_int = 1;
        let sa = sockaddr(addr);
        // SAFETY: a valid descriptor, option buffer and address.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
            libc::bind(
                fd,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// A socket bound to a source port on any address.
    pub fn port(port: u16) -> io::Result<BoundTcp> {
        Self::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
    }

    /// Connects; the stream has `limit` as its read timeout.
    pub fn connect_to(self, to: SocketAddrV4, limit: Duration) -> io::Result<TcpStream> {
        use std::os::fd::{AsRawFd as _, IntoRawFd as _};

        let sa = sockaddr(to);
        // SAFETY: a valid descriptor and address.
        let rc = unsafe {
            libc::connect(
                self.0.as_raw_fd(),
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor is ours and connected; the stream owns it from here.
        let stream = unsafe { TcpStream::from_raw_fd(self.0.into_raw_fd()) };
        stream.set_read_timeout(Some(limit))?;
        Ok(stream)
    }
}
