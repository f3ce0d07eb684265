//! Processes and traffic inside namespaces: background servers that end with their
//! guard, and senders that put exact packets on a link.

use std::{
    io,
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A process started by a test; killed (by its PID, which we own) and reaped on drop.
#[derive(Debug)]
pub struct Background {
    child: Child,
}

impl Background {
    /// Starts `cmd` with stdin and stdout closed; stderr goes where `cmd` says (inherited
    /// unless set, so a failing server shows why).
    pub fn spawn(mut cmd: Command) -> io::Result<Background> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))?;
        Ok(Background { child })
    }

    /// As [`Background::spawn`], with stdout a pipe ([`Background::stdout`]) and stderr
    /// as `cmd` says.
    pub fn spawn_reading(mut cmd: Command) -> io::Result<Background> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))?;
        Ok(Background { child })
    }

    /// The process's stdout, if it is a pipe not taken yet.
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The process's stderr, if it is a pipe not taken yet.
    pub fn stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        self.child.wait()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `count` UDP datagrams of `payload` from `from` to `to` (call inside a namespace,
/// see [`crate::netns::Netns::run`]).
pub fn send_udp(
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: &[u8],
    count: usize,
) -> io::Result<()> {
    let socket = UdpSocket::bind(from)?;
    for _ in 0..count {
        socket.send_to(payload, to)?;
    }
    Ok(())
}

/// Puts raw Ethernet frames on `iface` through an AF_PACKET socket, bypassing the stack:
/// the way to send malformed packets. Call inside the namespace that owns `iface`.
pub fn send_frames(iface: &str, frames: &[Vec<u8>]) -> io::Result<()> {
    let c_iface = std::ffi::CString::new(iface).map_err(io::Error::other)?;
    // SAFETY: NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // Protocol 0: this socket only sends, it never receives.
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket we own; OwnedFd closes it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    for frame in frames {
        let dst_mac = frame.get(..6).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "frame shorter than a MAC")
        })?;
        // SAFETY: zeroed sockaddr_ll is valid; we fill the fields sendto needs.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(dst_mac);
        // SAFETY: valid buffer and address for the lengths given.
        let sent = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A socket that sends whole IPv4 packets, header included, down the stack's output path
/// (routing, netfilter, the egress device) as if a local process had built them: the way
/// to open many flows without a socket each. Open it inside the sender's namespace.
pub struct RawIpv4(std::os::fd::OwnedFd);

impl RawIpv4 {
    pub fn open() -> io::Result<Self> {
        // IPPROTO_RAW: send only, header included (IP_HDRINCL is implied).
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new socket we own; OwnedFd closes it.
        Ok(RawIpv4(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    /// Sends one IPv4 packet to the destination address its header names.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let dst: [u8; 4] = packet
            .get(16..20)
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IPv4 packet"))?;
        // SAFETY: zeroed sockaddr_in is valid; we fill the fields sendto needs.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes(dst);
        // SAFETY: valid buffer and address for the lengths given.
        let sent = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Sets a flag when dropped, also while a panic unwinds: the way to stop a helper thread
/// of a `thread::scope` whose main body may fail.
pub struct SetOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Accepts one connection, giving up after `limit` (a guard against a hung test, not a
/// timing assertion). The stream comes back blocking, with `limit` as read/write timeout.
pub fn accept_within(listener: &TcpListener, limit: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + limit;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no connection arrived",
                ));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    Ok(stream)
}

/// Polls `check` until it returns `Some`, for at most `limit` (packets cross a veth in
/// softirq context, a little after `sendto` returns). Returns the last `None` as an error.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
