//! netbpf's kernel programs, one entry point per attachment point. Each reads as the
//! packet's path: parse, decide an [`Outcome`], count it, return the verdict.
#![no_std]
#![no_main]
// Atomic fetch-add on map values (see service::fetch_add).
#![feature(core_intrinsics)]
#![allow(internal_features)]
#![allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "aya's entry-point macros wrap each program in a pub fn taking the kernel's raw context"
)]

mod conntrack;
mod container;
mod endpoints;
mod icmp;
mod monitor;
mod nat;
mod packet;
mod reject;
mod service;
mod skb;
mod sock;
mod stats;
mod uplink;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use netbpf_common::stats::Hook;

/// tc (tcx) ingress on the host's uplink: traffic arriving from outside.
#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    // skb->len counts the whole frame; data..data_end may cover only the linear part.
    let frame_len = ctx.len();
    packet::pull_headers(&ctx);
    let (outcome, verdict) = uplink::handle(&uplink::Tc(&ctx));
    stats::count(Hook::FromUplink, outcome, frame_len);
    if outcome.is_drop() {
        monitor::dropped(
            Hook::FromUplink,
            outcome,
            ctx.data(),
            ctx.data_end(),
            frame_len,
            packet::ifindex(&ctx),
        );
    }
    verdict
}

/// tc (tcx) ingress on a container's host-side veth: traffic leaving the container.
#[classifier]
// The body straight in the program: LLVM otherwise keeps this large function apart, and
// the entry calls it (a BPF-to-BPF call per packet, and a frame more of stack).
#[inline(always)]
pub fn from_container(ctx: TcContext) -> i32 {
    let frame_len = ctx.len();
    packet::pull_headers(&ctx);
    let (outcome, verdict) = container::handle(&ctx);
    stats::count(Hook::FromContainer, outcome, frame_len);
    if outcome.is_drop() {
        monitor::dropped(
            Hook::FromContainer,
            outcome,
            ctx.data(),
            ctx.data_end(),
            frame_len,
            packet::ifindex(&ctx),
        );
    }
    verdict
}

/// XDP on the host's uplink: the same decisions before the kernel allocates an skb.
#[xdp]
pub fn xdp_uplink(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u32;
    let (outcome, verdict) = uplink::handle(&uplink::Xdp(&ctx));
    stats::count(Hook::XdpUplink, outcome, frame_len);
    if outcome.is_drop() {
        // SAFETY: the context of an XDP program is an xdp_md.
        let ifindex =
            unsafe { (*(ctx.as_ptr() as *const aya_ebpf::bindings::xdp_md)).ingress_ifindex };
        monitor::dropped(
            Hook::XdpUplink,
            outcome,
            ctx.data(),
            ctx.data_end(),
            frame_len,
            ifindex,
        );
    }
    verdict
}

/// cgroup connect4: a host process connecting to a published port reaches its container.
#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    stats::count(Hook::SockConnect4, sock::to_published(&ctx), 0);
    1
}

/// cgroup sendmsg4: a host process's datagram to a published port goes to its container.
#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    stats::count(Hook::SockSendmsg4, sock::to_published(&ctx), 0);
    1
}

/// cgroup recvmsg4: the answer seems to come from the published address.
#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    stats::count(Hook::SockRecvmsg4, sock::from_published(&ctx), 0);
    1
}

/// cgroup getpeername4: the peer is the published address the process connected to.
#[cgroup_sock_addr(getpeername4)]
pub fn sock_peername4(ctx: SockAddrContext) -> i32 {
    stats::count(Hook::SockPeername4, sock::from_published(&ctx), 0);
    1
}

/// Does nothing: the baseline a per-packet cost is measured against (BPF_PROG_TEST_RUN
/// of the same packet, same run). Never attached.
#[classifier]
pub fn bench_empty_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// Records the packet's flow in conntrack and does nothing else: the floor under a new
/// flow's cost (which records two entries, besides its own work), timed as the new flows
/// are. `TC_ACT_SHOT` if the flow was there already. Never attached.
#[classifier]
pub fn bench_ct_insert(ctx: TcContext) -> i32 {
    if conntrack::bench_insert(ctx.data(), ctx.data_end()) {
        TC_ACT_OK
    } else {
        TC_ACT_SHOT
    }
}

/// The XDP twin of [`bench_empty_tc`].
#[xdp]
pub fn bench_empty_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: a reachable panic would fail verification.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
