//! Link settings for the kernel object.

fn main() {
    // bpf-linker asks LLVM by default to keep memcpy's loads and stores in order for old
    // JITs' pattern matchers; that also turns every memset (a zeroed key's padding, a MAC)
    // into a BPF-to-BPF call of a byte loop. Without it they are plain stores.
    println!("cargo::rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
