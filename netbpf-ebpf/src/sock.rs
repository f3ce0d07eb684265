//! The host's own processes reaching published ports and services: cgroup socket programs
//! send a socket aimed at a published address (127.0.0.1, localhost, a host address) or a
//! VIP straight to the container, at connect() or sendmsg() time, and make its peer look as asked
//! (getpeername, recvmsg). No proxy, no per-packet translation. Only sockets of the network
//! namespace this instance manages are touched (its netns cookie).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::map,
    maps::LruHashMap,
    programs::SockAddrContext,
};
use netbpf_common::{conntrack::SockNat, stats::Outcome};

use crate::{conntrack, endpoints, service};

#[map]
static NB_SOCK_NAT: LruHashMap<u64, SockNat> = LruHashMap::with_max_entries(65536, 0);

/// Whether the socket lives in the namespace this instance manages.
#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    let Some(cfg) = conntrack::any_host_config() else {
        return false;
    };
    // SAFETY: a helper call on the program's own context.
    cfg.netns_cookie != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == cfg.netns_cookie
}

/// connect4 / sendmsg4: a published destination, or a VIP, becomes its container.
#[inline(always)]
pub fn to_published(ctx: &SockAddrContext) -> Outcome {
    if !ours(ctx) {
        return Outcome::Pass;
    }
    let sa = ctx.sock_addr;
    // SAFETY: the context of a sock_addr program; the fields are readable.
    let (dst, port, proto) =
        unsafe { ((*sa).user_ip4, (*sa).user_port as u16, (*sa).protocol as u8) };
    // A service's VIP: the backend is chosen here, once per socket (the host is one
    // client: hashing schedulers see address 0). Sockets are not counted as connections
    // of the backend, as their close is not seen here.
    let (target_addr, target_port, outcome) = if let Some(svc) = service::lookup(dst, port, proto) {
        let Some((_, backend)) = service::schedule(svc, 0, dst) else {
            return Outcome::DropNoBackend;
        };
        (backend.addr, backend.port, Outcome::Service)
    } else {
        // Loopback (127/8) and the host's own addresses; a port published on 127.0.0.1 is
        // found for 127.0.0.1 only, one published on 0.0.0.0 for every one of them.
        let loopback = dst.to_ne_bytes()[0] == 127;
        if !loopback && !conntrack::is_local(dst) {
            return Outcome::Pass;
        }
        let Some(target) = endpoints::published(dst, port, proto) else {
            return Outcome::Pass;
        };
        (target.addr, target.port, Outcome::Published)
    };
    let nat = SockNat {
        orig_addr: dst,
        target_addr,
        orig_port: port,
        target_port,
    };
    // SAFETY: a helper call on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if NB_SOCK_NAT.insert(&cookie, &nat, 0).is_err() {
        return Outcome::DropNatFailed;
    }
    // SAFETY: these fields are writable in connect4 and sendmsg4.
    unsafe {
        (*sa).user_ip4 = target_addr;
        (*sa).user_port = u32::from(target_port);
    }
    outcome
}

/// recvmsg4 / getpeername4: the container's address looks like the published one asked for.
#[inline(always)]
pub fn from_published(ctx: &SockAddrContext) -> Outcome {
    if !ours(ctx) {
        return Outcome::Pass;
    }
    // SAFETY: a helper call on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once.
    let Some(nat) = (unsafe { NB_SOCK_NAT.get(&cookie) }).copied() else {
        return Outcome::Pass;
    };
    let sa = ctx.sock_addr;
    // SAFETY: these fields are readable and writable in recvmsg4 and getpeername4.
    unsafe {
        if (*sa).user_ip4 != nat.target_addr || (*sa).user_port as u16 != nat.target_port {
            return Outcome::Pass;
        }
        (*sa).user_ip4 = nat.orig_addr;
        (*sa).user_port = u32::from(nat.orig_port);
    }
    Outcome::PublishedReply
}
