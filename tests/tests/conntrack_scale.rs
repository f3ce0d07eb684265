//! Conntrack at scale: `show conntrack` reads 100,000 flows, and reading them leaves the
//! table's LRU order alone. The proof is an eviction: flows the datapath used survive a
//! flood of new flows, flows that were only read (every one of them, several times) go
//! exactly as if nobody had read them.
//!
//! Why the assertion is sound (kernel/bpf/bpf_lru_list.c, the common LRU of `NB_CT`):
//! new entries go in unreferenced, through the writing CPU's pending list, to the head of
//! the inactive list; eviction takes unreferenced entries from the inactive list's tail
//! (oldest first) and moves referenced ones to the active list, which is only rotated
//! back while it is the longer of the two. A lookup by a program sets an entry's
//! reference bit; a lookup from user space (single or batch) does not. Writing every
//! entry from one CPU (the thread pinned) keeps them all in one order. So with a sparse
//! set of old entries touched by the datapath, then every entry dumped, then more new
//! entries than the table has room for beside the touched ones, the predicted survivors
//! are: every touched entry, none of the other old ones. Had a dump referenced what it
//! read, the old entries would have gone to the active list with the touched ones and
//! survived the flood instead of the newest.

mod support;

use std::{collections::HashSet, net::SocketAddrV4, path::Path};

use netbpf_common::{
    conntrack::{CtEntry, CtKey},
    maps::MAX_CT,
    pin_paths::NETNS_PIN_ROOT,
    stats::{Hook, Outcome},
};
use netbpf_tests::{
    TEST_PREFIX, TempDir,
    bpfmap::{FlowTarget, PinnedMap, pin_current_thread, published_flows},
    lab::{
        HOST_UPLINK_IF, HOST_UPLINK_IP, HOST_UPLINK_MAC, Lab, OUTSIDE_IF, OUTSIDE_IP, OUTSIDE_MAC,
    },
    packet::{Mac, udp4_frame},
    process::send_frames,
    require_root,
};
use serde_json::Value;
use support::{netbpf_ok, wait_for_count};

/// Flows in the table before the flood.
const OLD: u32 = 100_000;
/// Every 50th of the oldest half is used by the datapath: 1,000 flows, spread out so that
/// every stretch of the inactive list the kernel scans holds entries it may evict.
const TOUCH_EVERY: u32 = 50;
const TOUCHED_BELOW: u32 = 50_000;
/// Destination ports of the old flows and of the flood (distinct keys).
const OLD_DPORT: u16 = 20_000;
const NEW_DPORT: u16 = 30_000;
const SINK_IP: &str = "198.18.10.2";
const SINK_MAC: [u8; 6] = [0x02, 0x42, 198, 18, 10, 2];

fn touched(i: u32) -> bool {
    i < TOUCHED_BELOW && i.is_multiple_of(TOUCH_EVERY)
}

/// `show conntrack -o json`, parsed.
fn dump(lab: &Lab, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["show", "conntrack", "-o", "json"];
    args.extend_from_slice(filters);
    serde_json::from_str(&netbpf_ok(&lab.host, &args)).expect("conntrack JSON")
}

fn endpoint(addr: u32, port: u16) -> String {
    format!(
        "{}:{}",
        std::net::Ipv4Addr::from(addr.to_ne_bytes()),
        u16::from_be(port)
    )
}

/// What an eviction left of the old flows.
struct Survivors {
    /// Flows the datapath used that were evicted.
    lost_touched: Vec<u32>,
    /// Flows the datapath did not use that survived.
    kept_untouched: Vec<u32>,
    /// Of the 1,000 newest flows, how many are there.
    newest: usize,
}

/// A lab with a container behind a published-port flow target, 100,000 flows written
/// from one CPU, 1,000 of them used by the datapath, then `read`, then the flood.
fn evict_after(read: impl FnOnce(&Lab, &[(CtKey, CtEntry)])) -> Survivors {
    let lab = Lab::new(TEST_PREFIX, 1).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let file = dir
        .write(
            "netbpf.toml",
            &format!(
                "[host]\nuplink = \"{HOST_UPLINK_IF}\"\n\n\
                 [[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
                 [[container]]\nname = \"sink\"\nnetns = \"{}\"\nnetwork = \"front\"\n\
                 ip = \"{SINK_IP}\"\nmac = \"{}\"\n",
                lab.containers[0].path().display(),
                Mac(SINK_MAC)
            ),
        )
        .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", file.to_str().expect("UTF-8")]);
    // The flows' packets end in a socket (no port unreachable goes back).
    let _sink = lab.containers[0].run(|| std::net::UdpSocket::bind("0.0.0.0:80").expect("bind"));
    let containers: Vec<Value> =
        serde_json::from_str(&netbpf_ok(&lab.host, &["show", "containers", "-o", "json"]))
            .expect("JSON");
    let target = FlowTarget {
        addr: SINK_IP.parse().expect("address"),
        port: 80,
        ifindex: containers[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .expect("ifindex"),
        mac: SINK_MAC,
        gateway_mac: [0x02, 0, 0, 0, 0, 1],
    };
    let pin = Path::new(NETNS_PIN_ROOT)
        .join(lab.host.name())
        .join("maps/NB_CT");
    let ct = PinnedMap::open(&pin).expect("NB_CT");

    // 1. 100,000 flows, written in order from one CPU.
    // SAFETY: no preconditions; returns the CPU the thread runs on.
    let cpu = unsafe { libc::sched_getcpu() };
    pin_current_thread(usize::try_from(cpu).expect("a CPU")).expect("pin the thread");
    let old = published_flows(OUTSIDE_IP, HOST_UPLINK_IP, OLD_DPORT, 0..OLD, &target);
    ct.update_batch(&old, 4096).expect("fill NB_CT");

    // 2. The datapath uses 1,000 of them.
    let touched_flows: Vec<(CtKey, CtEntry)> = old
        .iter()
        .enumerate()
        .filter(|(i, _)| touched(*i as u32))
        .map(|(_, f)| *f)
        .collect();
    use_flows(&lab, &touched_flows);

    read(&lab, &old);

    // 3. The flood: room for all but the touched flows, and more, from the same CPU.
    let flood = MAX_CT - TOUCHED_BELOW / TOUCH_EVERY + 4096;
    let new = published_flows(OUTSIDE_IP, HOST_UPLINK_IP, NEW_DPORT, 0..flood, &target);
    ct.update_batch(&new, 4096).expect("flood NB_CT");

    let present = |k: &CtKey| ct.lookup::<CtKey, CtEntry>(k).expect("lookup").is_some();
    let mut survivors = Survivors {
        lost_touched: Vec::new(),
        kept_untouched: Vec::new(),
        newest: new
            .iter()
            .rev()
            .take(1000)
            .filter(|(k, _)| present(k))
            .count(),
    };
    for (i, (k, _)) in (0..OLD).zip(&old) {
        match (touched(i), present(k)) {
            (true, false) => survivors.lost_touched.push(i),
            (false, true) => survivors.kept_untouched.push(i),
            _ => {}
        }
    }
    survivors
}

/// One packet of each flow from outside, through the uplink program's conntrack lookup
/// (which sets the entry's reference bit); returns once the program counted them all.
fn use_flows(lab: &Lab, flows: &[(CtKey, CtEntry)]) {
    let before = support::counter(
        &support::stats(&lab.host),
        Hook::FromUplink,
        Outcome::Published,
    )
    .0;
    let frames: Vec<Vec<u8>> = flows
        .iter()
        .map(|(k, _)| {
            udp4_frame(
                HOST_UPLINK_MAC,
                OUTSIDE_MAC,
                SocketAddrV4::new(OUTSIDE_IP, u16::from_be(k.sport)),
                SocketAddrV4::new(HOST_UPLINK_IP, u16::from_be(k.dport)),
                b"touch",
            )
        })
        .collect();
    for part in frames.chunks(1000) {
        lab.outside
            .run(|| send_frames(OUTSIDE_IF, part))
            .expect("send");
    }
    wait_for_count(
        &lab.host,
        Hook::FromUplink,
        Outcome::Published,
        before + flows.len() as u64,
    );
}

fn first(v: &[u32]) -> &[u32] {
    &v[..v.len().min(10)]
}

#[test]
fn dumping_100000_flows_leaves_the_lru_order_alone() {
    require_root!();
    let survivors = evict_after(|lab, old| {
        // Everything read, several ways: the whole table as JSON (every flow there, the
        // touched ones with their packet), as a table, filtered, and through the views
        // that count closing flows.
        let rows = dump(lab, &[]);
        assert_eq!(rows.len(), OLD as usize, "every flow is listed");
        let used: HashSet<(String, String)> = rows
            .iter()
            .filter(|r| r["packets"] == 1)
            .map(|r| {
                (
                    r["src"].as_str().unwrap_or("?").to_owned(),
                    r["dst"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        let expected_used: HashSet<(String, String)> = (0..OLD)
            .zip(old)
            .filter(|(i, _)| touched(*i))
            .map(|(_, (k, _))| (endpoint(k.saddr, k.sport), endpoint(k.daddr, k.dport)))
            .collect();
        assert_eq!(
            used, expected_used,
            "exactly the touched flows saw a packet"
        );
        let table = netbpf_ok(&lab.host, &["show", "conntrack"]);
        assert_eq!(
            table.lines().count(),
            OLD as usize + 1,
            "a header and a line per flow"
        );
        let one = dump(
            lab,
            &["--src", &format!("{OUTSIDE_IP}:1025"), "--proto", "udp"],
        );
        assert_eq!(
            one.len(),
            2,
            "source port 1025 to both destination ports: {one:?}"
        );
        netbpf_ok(&lab.host, &["show", "services"]);
        netbpf_ok(&lab.host, &["show", "backends"]);
    });
    assert!(
        survivors.lost_touched.is_empty(),
        "{} flows the datapath used were evicted (first: {:?})",
        survivors.lost_touched.len(),
        first(&survivors.lost_touched)
    );
    assert!(
        survivors.kept_untouched.is_empty(),
        "{} flows that were only read survived the flood, as if reading had refreshed them \
         (first: {:?})",
        survivors.kept_untouched.len(),
        first(&survivors.kept_untouched)
    );
    assert_eq!(survivors.newest, 1000, "the newest flows are in the table");
}

/// The control: the same experiment with a "dump" that does refresh what it reads (the
/// datapath using every old flow once) keeps the old flows instead (about 98,600 of the
/// 99,000 on kernel 6.18): the test above would see a refreshing dump.
#[test]
fn a_refreshing_read_would_show() {
    require_root!();
    let survivors = evict_after(use_flows);
    assert!(
        survivors.kept_untouched.len() > (OLD - TOUCHED_BELOW / TOUCH_EVERY) as usize / 2,
        "only {} of the refreshed flows survived",
        survivors.kept_untouched.len()
    );
}
