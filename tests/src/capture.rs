//! Frames an interface receives, captured with a packet socket together with the kernel's
//! note on each: whether its transport checksum is still to be completed (the sender left
//! it to offload, CHECKSUM_PARTIAL, and the field holds only the pseudo header's sum).

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use crate::packet;

/// `tpacket_auxdata.tp_status`: the checksum is to be completed by whoever sends it on.
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const ETH_P_IP: u16 = 0x0800;

/// A packet socket on one interface, receiving its IPv4 frames.
pub struct Capture(OwnedFd);

/// A received frame.
pub struct Captured {
    pub frame: Vec<u8>,
    /// The transport checksum is the pseudo header's sum, to be completed (CHECKSUM_PARTIAL).
    pub checksum_pending: bool,
}

impl Capture {
    /// Opens the capture on `iface` of the namespace the calling thread is in.
    pub fn open(iface: &str) -> io::Result<Capture> {
        let c_iface = std::ffi::CString::new(iface).map_err(io::Error::other)?;
        // SAFETY: NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2) call; the descriptor is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor of ours.
        let capture = Capture(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: zeroed sockaddr_ll is valid; the fields bind needs are set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_IP.to_be();
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: a valid descriptor and address of the length given.
        let rc = unsafe {
            libc::bind(
                fd,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        capture.set_option(
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            (&raw const one).cast(),
            size_of::<libc::c_int>(),
        )?;
        let quiet = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        capture.set_option(
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const quiet).cast(),
            size_of::<libc::timeval>(),
        )?;
        Ok(capture)
    }

    fn set_option(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: *const libc::c_void,
        len: usize,
    ) -> io::Result<()> {
        // SAFETY: a valid descriptor; the caller passes a value of `len` bytes.
        let rc = unsafe { libc::setsockopt(self.0.as_raw_fd(), level, name, value, len as u32) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The frames received so far (the interface's own outgoing ones left out), read
    /// until none comes for 200 ms or `limit` passes.
    pub fn received(&self, limit: Duration) -> io::Result<Vec<Captured>> {
        let started = std::time::Instant::now();
        let mut frames = Vec::new();
        while started.elapsed() < limit {
            let mut buf = vec![0u8; 65536];
            // Room for one cmsg carrying a tpacket_auxdata.
            let mut control = [0u64; 16];
            // SAFETY: zeroed sockaddr_ll is valid.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: zeroed msghdr is valid; the buffers are set below.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&raw mut from).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control);
            // SAFETY: every buffer msg points to lives through the call.
            let n = unsafe { libc::recvmsg(self.0.as_raw_fd(), &raw mut msg, 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    break;
                }
                return Err(err);
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            buf.truncate(n as usize);
            frames.push(Captured {
                frame: buf,
                checksum_pending: status(&msg) & TP_STATUS_CSUMNOTREADY != 0,
            });
        }
        Ok(frames)
    }
}

/// `tp_status` of a received message's auxdata (0 without one).
fn status(msg: &libc::msghdr) -> u32 {
    // SAFETY: msg was filled by recvmsg; the CMSG macros walk its control buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == libc::PACKET_AUXDATA {
                let aux = libc::CMSG_DATA(cmsg).cast::<libc::tpacket_auxdata>();
                return std::ptr::read_unaligned(aux).tp_status;
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    0
}

impl Captured {
    /// Whether the frame's TCP or UDP checksum is right for its addresses: with the check
    /// pending, the field must hold the pseudo header's sum (what the completion adds the
    /// rest to); otherwise the whole checksum must verify. `None`: not an IPv4 TCP or UDP
    /// frame.
    pub fn transport_checksum_ok(&self) -> Option<bool> {
        let f = &self.frame;
        if f.len() < 34 || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IP {
            return None;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let proto = f[23];
        if proto != packet::IPPROTO_TCP && proto != packet::IPPROTO_UDP {
            return None;
        }
        let l4 = f.get(14 + ihl..14 + total)?;
        let check_at = if proto == packet::IPPROTO_TCP { 16 } else { 6 };
        let field = u16::from_be_bytes([*l4.get(check_at)?, *l4.get(check_at + 1)?]);
        // UDP's "no checksum", which a checksum left to complete can never be.
        if proto == packet::IPPROTO_UDP && field == 0 {
            return Some(!self.checksum_pending);
        }
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        let pseudo_sum = !packet::checksum(&pseudo);
        Some(if self.checksum_pending {
            // 0 and 0xffff are the same ones'-complement number.
            field == pseudo_sum || (field == 0 || field == 0xffff) && pseudo_sum == 0xffff
        } else {
            let mut whole = pseudo;
            whole.extend_from_slice(l4);
            packet::checksum(&whole) == 0
        })
    }
}
