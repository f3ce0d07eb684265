//! What wakes the agent: SIGHUP (reload), SIGTERM/SIGINT (exit), changes to the
//! definitions file (through inotify on its directory, so editors that replace the file are
//! seen too), the health checker (an eventfd it writes when a backend goes down or comes
//! back), a definitions source that changes by itself (an eventfd the Docker driver writes),
//! and a tick for periodic work (conntrack cleanup). One poll(2) over all of them, with the
//! tick as its timeout; no busy loop.

use std::{
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
    sync::Arc,
};

use crate::{Error, Result};

pub enum Event {
    Reload,
    Exit(&'static str),
    /// Something woke the agent through a [`Waker`] (a backend's health changed).
    Wake,
    /// `interval` passed without anything else happening.
    Tick,
}

pub struct Watch {
    signals: OwnedFd,
    inotify: OwnedFd,
    wake: Arc<OwnedFd>,
    /// Written by [`Watch::reloader`]'s wakers: [`Event::Reload`].
    reload: Arc<OwnedFd>,
    file_name: Vec<u8>,
}

/// Wakes the agent's loop from another thread ([`Event::Wake`]).
#[derive(Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a local to an eventfd we hold. A full counter
        // (never, in practice) only means a wake-up is pending already.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}

fn last_os_error(context: &str) -> Error {
    Error::io(context, io::Error::last_os_error())
}

impl Watch {
    /// Blocks the signals (they arrive through the signalfd instead) and watches `file`,
    /// if there is one.
    pub fn new(file: Option<&Path>) -> Result<Watch> {
        // SAFETY: plain libc calls on a zeroed sigset we own.
        let signals = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(last_os_error("blocking signals"));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(last_os_error("signalfd"));
            }
            OwnedFd::from_raw_fd(fd)
        };
        let dir = match file.and_then(Path::parent) {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file_name = file
            .and_then(Path::file_name)
            .unwrap_or(OsStr::new(""))
            .as_bytes()
            .to_vec();
        // SAFETY: inotify_init1 returns a new fd or -1.
        let inotify = unsafe {
            let fd = libc::inotify_init1(libc::IN_CLOEXEC);
            if fd < 0 {
                return Err(last_os_error("inotify_init1"));
            }
            OwnedFd::from_raw_fd(fd)
        };
        let c_dir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| Error::io(format!("watching {}", dir.display()), io::Error::other(e)))?;
        // Not IN_CREATE: a file is created empty, before it is written; reading it then
        // would remove every container.
        let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO;
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        if file.is_some()
            && unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c_dir.as_ptr(), mask) } < 0
        {
            return Err(last_os_error(&format!("watching {}", dir.display())));
        }
        Ok(Watch {
            signals,
            inotify,
            wake: Arc::new(eventfd()?),
            reload: Arc::new(eventfd()?),
            file_name,
        })
    }

    /// A handle that makes [`Watch::next`] return [`Event::Reload`].
    pub fn reloader(&self) -> Waker {
        Waker(Arc::clone(&self.reload))
    }

    /// A handle that makes [`Watch::next`] return [`Event::Wake`].
    pub fn waker(&self) -> Waker {
        Waker(Arc::clone(&self.wake))
    }

    /// Sleeps until something happens.
    pub fn next(&self, interval: std::time::Duration) -> Result<Event> {
        let timeout = i32::try_from(interval.as_millis()).unwrap_or(i32::MAX);
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.signals.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.inotify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.reload.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: four valid pollfds and a timeout in milliseconds.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready == 0 {
                return Ok(Event::Tick);
            }
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("poll", e));
            }
            if fds[0].revents & libc::POLLIN != 0 {
                // SAFETY: reading one siginfo struct into a zeroed buffer of its size.
                let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                let n = unsafe {
                    libc::read(
                        self.signals.as_raw_fd(),
                        (&raw mut info).cast(),
                        size_of::<libc::signalfd_siginfo>(),
                    )
                };
                if n == size_of::<libc::signalfd_siginfo>() as isize {
                    match info.ssi_signo as i32 {
                        libc::SIGHUP => return Ok(Event::Reload),
                        libc::SIGTERM => return Ok(Event::Exit("SIGTERM")),
                        _ => return Ok(Event::Exit("SIGINT")),
                    }
                }
            }
            if fds[1].revents & libc::POLLIN != 0 && self.file_changed()? {
                return Ok(Event::Reload);
            }
            if fds[2].revents & libc::POLLIN != 0 {
                let mut count: u64 = 0;
                // SAFETY: reading the eventfd's 8-byte counter into a local (resets it).
                let _ = unsafe { libc::read(self.wake.as_raw_fd(), (&raw mut count).cast(), 8) };
                return Ok(Event::Wake);
            }
            if fds[3].revents & libc::POLLIN != 0 {
                let mut count: u64 = 0;
                // SAFETY: as above, for the reload eventfd.
                let _ = unsafe { libc::read(self.reload.as_raw_fd(), (&raw mut count).cast(), 8) };
                return Ok(Event::Reload);
            }
        }
    }

    /// Drains the inotify events; true if one names the definitions file.
    fn file_changed(&self) -> Result<bool> {
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a buffer we own, of the size given.
        let n = unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(last_os_error("reading inotify events"));
        }
        let header = size_of::<libc::inotify_event>();
        let mut offset = 0;
        let mut changed = false;
        while offset + header <= n as usize {
            // SAFETY: the kernel wrote a whole event header at offset; read it unaligned.
            let event: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().add(offset).cast()) };
            let name_start = offset + header;
            let name_end = (name_start + event.len as usize).min(n as usize);
            let name = &buf[name_start..name_end];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            // An overflowed queue lost events: reload to be sure.
            changed |= name == self.file_name.as_slice() || event.mask & libc::IN_Q_OVERFLOW != 0;
            offset = name_end;
        }
        Ok(changed)
    }
}

/// A new non-blocking eventfd.
fn eventfd() -> Result<OwnedFd> {
    // SAFETY: eventfd returns a new fd or -1; the fd is ours from here on.
    unsafe {
        let fd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        if fd < 0 {
            return Err(last_os_error("eventfd"));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
