//! `netbpf monitor`: a live stream of datapath events (drops with their reason; with
//! `--all`, new translated flows). The monitor takes a lease in `NB_MON_ON` and renews it
//! every second; the programs write events only while a lease runs, so without a monitor
//! nothing is written, and a monitor that dies stops them within its lease.

use std::{
    io::Write,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData, RingBuf};
use netbpf_common::{
    conntrack::kind_name,
    maps,
    monitor::{EVENT_DROP, EVENT_FLOW, MON_DROPS, MON_FLOWS, MonitorEvent, MonitorLease},
    stats::{Hook, Outcome},
};
use serde::Serialize;

use crate::{
    Error, Result,
    kernel::{clock, conntrack, pins::PinDir},
};

/// How long a lease runs past its last renewal.
const LEASE: Duration = Duration::from_secs(3);

pub struct Options {
    /// New translated flows too, not only drops.
    pub flows: bool,
    pub json: bool,
    /// Stop after this many events.
    pub count: Option<usize>,
}

/// One event as shown.
#[derive(Debug, Serialize)]
pub struct Event {
    /// "drop" or "flow".
    pub kind: &'static str,
    /// The hook (drops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<&'static str>,
    /// Drops: the outcome's name (the reason) and meaning; flows: the flow's kind.
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meaning: Option<&'static str>,
    pub proto: String,
    pub src: String,
    pub dst: String,
    /// Flows: where the first direction is translated to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translated: Option<String>,
    /// The interface (drops: where it arrived; flows: where it goes), by name when known.
    pub dev: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<u32>,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |source| Error::Map { map, source }
}

fn pinned(pins: &PinDir, name: &'static str) -> Result<Map> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(Error::NotAttached {
            pin_dir: pins.path().to_owned(),
        });
    }
    let data = MapData::from_pin(&path).map_err(map_err(name))?;
    Map::from_map_data(data).map_err(map_err(name))
}

/// Streams events to `out` until SIGINT/SIGTERM (or `count` events), one line each.
pub fn run(pins: &PinDir, options: &Options, out: &mut impl Write) -> Result<()> {
    let mut ring =
        RingBuf::try_from(pinned(pins, maps::MONITOR)?).map_err(map_err(maps::MONITOR))?;
    let mut lease: Array<MapData, MonitorLease> =
        Array::try_from(pinned(pins, maps::MON_ON)?).map_err(map_err(maps::MON_ON))?;
    let hz = u64::from(conntrack::clock(pins)?.hz());
    let signals = Signals::block()?;
    let wants = MON_DROPS | if options.flows { MON_FLOWS } else { 0 };
    let renew = |lease: &mut Array<MapData, MonitorLease>, until: u64| {
        let value = MonitorLease {
            until,
            wants,
            pad: 0,
        };
        lease.set(0, &value, 0).map_err(map_err(maps::MON_ON))
    };
    let mut shown = 0;
    let mut renewed = Instant::now() - LEASE;
    let result = (|| -> Result<()> {
        loop {
            if renewed.elapsed() >= Duration::from_secs(1) {
                let first = shown == 0 && renewed.elapsed() >= LEASE;
                renew(&mut lease, clock::jiffies()? + LEASE.as_secs() * hz)?;
                renewed = Instant::now();
                if first {
                    eprintln!(
                        "monitoring {}",
                        if options.flows {
                            "drops and new flows"
                        } else {
                            "drops"
                        }
                    );
                }
            }
            let mut fds = [
                libc::pollfd {
                    fd: ring.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: signals.0.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd entries.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
            while let Some(item) = ring.next() {
                if item.len() < size_of::<MonitorEvent>() {
                    continue;
                }
                // SAFETY: the programs write whole MonitorEvents; read unaligned.
                let raw = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<MonitorEvent>()) };
                let event = describe(&raw);
                let line = if options.json {
                    serde_json::to_string(&event).unwrap_or_default()
                } else {
                    render(&event)
                };
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .map_err(|e| Error::io("writing events", e))?;
                shown += 1;
                if options.count.is_some_and(|n| shown >= n) {
                    return Ok(());
                }
            }
            if fds[1].revents & libc::POLLIN != 0 {
                return Ok(());
            }
        }
    })();
    // The lease ends with the monitor.
    renew(&mut lease, 0)?;
    result
}

fn describe(e: &MonitorEvent) -> Event {
    let addr = |a: u32| Ipv4Addr::from(a.to_ne_bytes());
    let proto = match e.proto {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        1 => "icmp".to_owned(),
        0 => "-".to_owned(),
        p => p.to_string(),
    };
    let endpoint = |a: u32, p: u16| {
        if e.proto == 6 || e.proto == 17 {
            format!("{}:{}", addr(a), u16::from_be(p))
        } else {
            addr(a).to_string()
        }
    };
    let dev = interface_name(e.ifindex);
    if e.kind == EVENT_FLOW {
        return Event {
            kind: "flow",
            hook: None,
            reason: kind_name(e.flow_kind),
            meaning: None,
            proto,
            src: endpoint(e.saddr, e.sport),
            dst: endpoint(e.daddr, e.dport),
            translated: Some(endpoint(e.nat_addr, e.nat_port)),
            dev,
            len: None,
        };
    }
    let hook = Hook::ALL.into_iter().find(|h| *h as u32 == e.hook);
    let outcome = Outcome::ALL.into_iter().find(|o| *o as u32 == e.outcome);
    Event {
        kind: if e.kind == EVENT_DROP {
            "drop"
        } else {
            "unknown"
        },
        hook: hook.map(Hook::name),
        reason: outcome.map_or("unknown", Outcome::name),
        meaning: outcome.map(Outcome::meaning),
        proto,
        src: endpoint(e.saddr, e.sport),
        dst: endpoint(e.daddr, e.dport),
        translated: None,
        dev,
        len: Some(e.len),
    }
}

/// One line: `drop from_container drop_spoofed_ip udp 198.18.10.9:4000 -> 198.18.10.3:53
/// dev veth1 len 60`, or `flow published tcp A -> B => C dev veth1`.
pub fn render(e: &Event) -> String {
    match e.kind {
        "flow" => format!(
            "flow {} {} {} -> {} => {} dev {}",
            e.reason,
            e.proto,
            e.src,
            e.dst,
            e.translated.as_deref().unwrap_or("-"),
            e.dev
        ),
        _ => format!(
            "drop {} {} {} {} -> {} dev {} len {}",
            e.hook.unwrap_or("-"),
            e.reason,
            e.proto,
            e.src,
            e.dst,
            e.dev,
            e.len.unwrap_or(0)
        ),
    }
}

/// The interface's name in this namespace, else its index.
fn interface_name(ifindex: u32) -> String {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: a buffer of IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if name.is_null() {
        return format!("ifindex {ifindex}");
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// SIGINT and SIGTERM, blocked and read through a signalfd, so the monitor ends its lease
/// before it exits.
struct Signals(OwnedFd);

impl Signals {
    fn block() -> Result<Signals> {
        // SAFETY: plain signal-set calls on a local set; the fd is owned at once.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(Error::io(
                    "blocking signals",
                    std::io::Error::last_os_error(),
                ));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(Error::io("signalfd", std::io::Error::last_os_error()));
            }
            Ok(Signals(OwnedFd::from_raw_fd(fd)))
        }
    }
}

#[cfg(test)]
mod tests {
    use netbpf_common::conntrack::CT_PUBLISHED_IN;

    use super::*;

    #[test]
    fn drops_and_flows_read_as_lines() {
        let drop = MonitorEvent {
            kind: EVENT_DROP,
            proto: 17,
            hook: Hook::FromContainer as u32,
            outcome: Outcome::DropSpoofedIp as u32,
            len: 60,
            ifindex: 0,
            saddr: u32::from_ne_bytes([198, 18, 10, 9]),
            daddr: u32::from_ne_bytes([198, 18, 10, 3]),
            sport: 4000u16.to_be(),
            dport: 53u16.to_be(),
            ..MonitorEvent::default()
        };
        assert_eq!(
            render(&describe(&drop)),
            "drop from_container drop_spoofed_ip udp 198.18.10.9:4000 -> 198.18.10.3:53 dev ifindex 0 len 60"
        );
        let flow = MonitorEvent {
            kind: EVENT_FLOW,
            proto: 6,
            flow_kind: CT_PUBLISHED_IN,
            saddr: u32::from_ne_bytes([198, 18, 0, 2]),
            daddr: u32::from_ne_bytes([198, 18, 0, 1]),
            sport: 40000u16.to_be(),
            dport: 8080u16.to_be(),
            nat_addr: u32::from_ne_bytes([198, 18, 10, 2]),
            nat_port: 80u16.to_be(),
            ..MonitorEvent::default()
        };
        assert_eq!(
            render(&describe(&flow)),
            "flow published tcp 198.18.0.2:40000 -> 198.18.0.1:8080 => 198.18.10.2:80 dev ifindex 0"
        );
        let json = serde_json::to_value(describe(&drop)).expect("json");
        assert_eq!(json["reason"], "drop_spoofed_ip");
        assert_eq!(json["hook"], "from_container");
    }
}
