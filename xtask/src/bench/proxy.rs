//! A userspace TCP proxy the way docker-proxy does it: accept on the published address,
//! connect to the container, and copy bytes both ways until each side closes, one thread
//! per connection and direction (docker-proxy's goroutines). The baseline of host
//! processes reaching a published port at 127.0.0.1.
//!
//! It runs as `xtask bench-proxy` inside the lab's host namespace (`ip netns exec`), so
//! that every socket it opens, on every thread, lives there.

use std::{
    io,
    net::{Shutdown, SocketAddrV4, TcpListener, TcpStream},
    path::Path,
    thread,
};

use anyhow::Context as _;
use netbpf_tests::{netns::Netns, process::Background};

use super::tools::wait_listening;

/// Starts the proxy from `listen` to `to` in `ns` and waits until it accepts; it runs until
/// the returned guard drops. Its complaints go to `dir/proxy.log`.
pub fn start(
    ns: &Netns,
    listen: SocketAddrV4,
    to: SocketAddrV4,
    dir: &Path,
) -> anyhow::Result<Background> {
    let exe = std::env::current_exe().context("path of xtask")?;
    let exe = exe.to_str().context("xtask's path is not UTF-8")?;
    let (listen_arg, to_arg) = (listen.to_string(), to.to_string());
    let mut cmd = ns.command(exe, &["bench-proxy", &listen_arg, &to_arg]);
    cmd.stderr(std::fs::File::create(dir.join("proxy.log")).context("proxy log")?);
    let proxy = Background::spawn(cmd)?;
    wait_listening(ns, listen)?;
    Ok(proxy)
}

/// Serves until killed.
pub fn serve(listen: SocketAddrV4, to: SocketAddrV4) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    for client in listener.incoming() {
        match client {
            Ok(client) => {
                thread::spawn(move || {
                    if let Err(e) = connection(client, to) {
                        eprintln!("proxy: {e}");
                    }
                });
            }
            Err(e) => eprintln!("proxy: accept: {e}"),
        }
    }
    Ok(())
}

/// One client: connect to `to`, then copy both ways (this thread one direction, a second
/// thread the other), each direction's end passed on as a half-close.
fn connection(client: TcpStream, to: SocketAddrV4) -> io::Result<()> {
    let backend = TcpStream::connect(to)?;
    // Go's TCP connections, docker-proxy's among them, have Nagle off.
    client.set_nodelay(true)?;
    backend.set_nodelay(true)?;
    let (client_rx, backend_tx) = (client.try_clone()?, backend.try_clone()?);
    let upstream = thread::spawn(move || pipe(client_rx, backend_tx));
    pipe(backend, client);
    let _ = upstream.join();
    Ok(())
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Read);
    let _ = to.shutdown(Shutdown::Write);
}
