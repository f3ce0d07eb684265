//! A TCP server in a namespace for traffic tests: on 0.0.0.0:8080, each connection on a
//! thread of its own gets an optional greeting line (a backend's name, so a test sees
//! which backend it reached), then an echo of whatever it sends, until the client closes.
//! Stops when dropped.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::netns::Netns;

pub struct TcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    /// A server greeting each connection with `name` on a line first.
    pub fn named(ns: &Netns, name: &'static str) -> TcpServer {
        Self::start(ns, Some(name))
    }

    /// A plain echo server.
    pub fn echo(ns: &Netns) -> TcpServer {
        Self::start(ns, None)
    }

    fn start(ns: &Netns, greeting: Option<&'static str>) -> TcpServer {
        let listener = ns.run(|| TcpListener::bind("0.0.0.0:8080").expect("listen"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        std::thread::spawn(move || serve(conn, greeting));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        TcpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut conn: TcpStream, greeting: Option<&str>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    if let Some(name) = greeting
        && conn.write_all(format!("{name}\n").as_bytes()).is_err()
    {
        return;
    }
    let mut buf = [0u8; 256];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 || conn.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
