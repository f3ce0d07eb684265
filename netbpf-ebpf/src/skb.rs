//! What the `__sk_buff` view of an skb leaves out: its checksum state (`ip_summed`).
//!
//! The kfunc `bpf_cast_to_kern_ctx` gives the kernel's own `struct sk_buff` behind the
//! context, and the verifier makes that call a register move, so the state costs one load
//! where a csum helper call would cost three kernel calls. Two gaps are bridged at load
//! time ([`netbpf_common::skb`]): the program calls a helper number no helper has, which
//! the loader turns into the kfunc's call, and the loader writes where this kernel keeps
//! the two bits (read off its BTF). A kernel without them leaves the state unknown, and
//! the callers fall back to the helpers.

use core::{ffi::c_void, mem::transmute, ptr::read_volatile};

use aya_ebpf::{EbpfContext as _, programs::TcContext};
use netbpf_common::skb::KERN_CTX_CALL;

/// `ip_summed`: the checksum is not computed (or not checked), ...
pub const CHECKSUM_NONE: u8 = 0;
/// ... the device checked it, ...
pub const CHECKSUM_UNNECESSARY: u8 = 1;
// (2, CHECKSUM_COMPLETE: `skb->csum` holds the packet's sum, which a rewrite must keep
// true; only the csum helpers can, so no code here names it.)
/// ... or the sender left it to offload: the field holds the pseudo header's sum.
pub const CHECKSUM_PARTIAL: u8 = 3;
/// The loader could not say where the state is.
pub const CHECKSUM_UNKNOWN: u8 = 0xff;

/// Offset of the byte holding `ip_summed` in `struct sk_buff`, plus one; 0: unknown.
/// Set by the loader, read-only to the programs (so the verifier sees a constant).
#[unsafe(no_mangle)]
static CSUM_STATE_AT: u32 = 0;

/// `ip_summed`'s bit position in that byte.
#[unsafe(no_mangle)]
static CSUM_STATE_SHIFT: u32 = 0;

/// The packet's checksum state, one of the `CHECKSUM_*` values.
#[inline(always)]
pub fn csum_state(ctx: &TcContext) -> u8 {
    // SAFETY: plain reads of read-only globals; volatile, as the compiler sees only the 0
    // the loader replaces.
    let (at, shift) = unsafe {
        (
            read_volatile(&CSUM_STATE_AT),
            read_volatile(&CSUM_STATE_SHIFT),
        )
    };
    if at == 0 {
        return CHECKSUM_UNKNOWN;
    }
    // SAFETY: the loader made this call `bpf_cast_to_kern_ctx(ctx)`, which returns the
    // kernel's sk_buff behind a tc context (never null); `at - 1` lies inside it, and the
    // verifier checks that read against the kernel's BTF.
    unsafe {
        let kern_ctx: unsafe extern "C" fn(*mut c_void) -> *const u8 =
            transmute(KERN_CTX_CALL as usize);
        let skb = kern_ctx(ctx.as_ptr());
        (*skb.add(at as usize - 1) >> shift) & 3
    }
}
