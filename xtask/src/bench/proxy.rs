//! A userspace TCP proxy the way docker-proxy does it: accept on the published address,
//! connect to the container, and copy bytes both ways until each side closes, one thread
//! per connection and direction (docker-proxy's goroutines). The baseline of host
//! processes reaching a published port at 127.0.0.1.
//!
//! UDP the same way, on the same address and port: docker-proxy's UDP proxy keeps a socket
//! connected to the container per client address, with a thread copying the container's
//! datagrams back to that client.
//!
//! It runs as `xtask bench-proxy` inside the lab's host namespace (`ip netns exec`), so
//! that every socket it opens, on every thread, lives there.

use std::{
    collections::HashMap,
    io,
    net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::Arc,
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

/// Serves until killed: TCP, and UDP on the same address and port.
pub fn serve(listen: SocketAddrV4, to: SocketAddrV4) -> anyhow::Result<()> {
    let udp = UdpSocket::bind(listen).with_context(|| format!("binding UDP {listen}"))?;
    thread::spawn(move || {
        if let Err(e) = serve_udp(udp, to) {
            eprintln!("proxy: UDP: {e}");
        }
    });
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

/// UDP: one socket connected to `to` per client address, and a thread per client copying
/// the container's datagrams back through the listening socket.
fn serve_udp(listen: UdpSocket, to: SocketAddrV4) -> io::Result<()> {
    let listen = Arc::new(listen);
    let mut clients: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = listen.recv_from(&mut buf)?;
        let backend = match clients.get(&from) {
            Some(b) => b,
            None => {
                let b = UdpSocket::bind("0.0.0.0:0")?;
                b.connect(to)?;
                let (back, reply_to) = (b.try_clone()?, Arc::clone(&listen));
                thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = back.recv(&mut buf) {
                        if reply_to.send_to(&buf[..n], from).is_err() {
                            break;
                        }
                    }
                });
                clients.entry(from).or_insert(b)
            }
        };
        // A full socket buffer drops the datagram, as a proxy under load does.
        let _ = backend.send(&buf[..n]);
    }
}
