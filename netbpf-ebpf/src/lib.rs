//! Empty library target: it lets `netbpf`'s build script depend on this crate, so cargo
//! rebuilds the kernel object when it changes. The programs live in `main.rs`.
#![no_std]
