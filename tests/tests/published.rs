//! Published ports, as far as they are built: definitions resolved to host ports, written
//! to NB_PORTS, shown like `docker port`, stable across reloads, conflicts refused.

mod support;

use netbpf_tests::{TEST_PREFIX, TempDir, lab::Lab, require_root};
use serde_json::Value;
use support::{netbpf, netbpf_ok, stderr_of};

fn definitions(lab: &Lab, web1_ports: &str, extra: &str) -> String {
    let ns = |i: usize| lab.containers[i].path().display().to_string();
    format!(
        "{extra}[[network]]\nname = \"front\"\nsubnet = \"198.18.10.0/24\"\n\n\
         [[container]]\nname = \"web1\"\nnetns = \"{}\"\nnetwork = \"front\"\nports = [{web1_ports}]\n\n\
         [[container]]\nname = \"web2\"\nnetns = \"{}\"\nnetwork = \"front\"\npublish_all = true\nexpose = [80, \"53/udp\"]\n",
        ns(0),
        ns(1)
    )
}

fn ports(lab: &Lab) -> Vec<String> {
    let rows: Vec<Value> =
        serde_json::from_str(&netbpf_ok(&lab.host, &["show", "ports", "-o", "json"]))
            .expect("JSON");
    rows.iter()
        .map(|r| {
            format!(
                "{} {}/{} -> {}:{}",
                r["container"].as_str().unwrap_or("?"),
                r["container_port"],
                r["proto"].as_str().unwrap_or("?"),
                r["host_ip"].as_str().unwrap_or("?"),
                r["host_port"]
            )
        })
        .collect()
}

#[test]
fn ports_are_published_shown_and_kept_across_reloads() {
    require_root!();
    let lab = Lab::new(TEST_PREFIX, 3).expect("lab");
    let dir = TempDir::new(&lab.prefix).expect("dir");
    let file = dir
        .write(
            "netbpf.toml",
            &definitions(
                &lab,
                r#""8080:80", "127.0.0.1:5353:53/udp", "9000-9001:9000-9001", "90""#,
                "",
            ),
        )
        .expect("write");
    let file = file.to_str().expect("UTF-8").to_owned();
    let out = netbpf_ok(&lab.host, &["apply", "-c", &file]);
    assert!(out.contains("7 published port(s)"), "{out}");
    let first = ports(&lab);
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("port range")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("low port");
    assert_eq!(
        first,
        [
            "web1 53/udp -> 127.0.0.1:5353".to_owned(),
            "web1 80/tcp -> 0.0.0.0:8080".to_owned(),
            format!("web1 90/tcp -> 0.0.0.0:{low}"),
            "web1 9000/tcp -> 0.0.0.0:9000".to_owned(),
            "web1 9001/tcp -> 0.0.0.0:9001".to_owned(),
            format!("web2 53/udp -> 0.0.0.0:{low}"),
            format!("web2 80/tcp -> 0.0.0.0:{}", low + 1),
        ]
    );

    // A container listed first that wants a free port does not take web1's or web2's.
    let extra = format!(
        "[[container]]\nname = \"aaa\"\nnetns = \"{}\"\nnetwork = \"front\"\nports = [\"70\"]\n\n",
        lab.containers[2].path().display()
    );
    dir.write(
        "netbpf.toml",
        &definitions(
            &lab,
            r#""8080:80", "127.0.0.1:5353:53/udp", "9000-9001:9000-9001", "90""#,
            &extra,
        ),
    )
    .expect("write");
    netbpf_ok(&lab.host, &["apply", "-c", &file]);
    let second = ports(&lab);
    for row in &first {
        assert!(second.contains(row), "{row} moved: {second:?}");
    }
    assert!(
        second.contains(&format!("aaa 70/tcp -> 0.0.0.0:{}", low + 2)),
        "{second:?}"
    );

    // A conflict is refused, naming container and entry, and nothing changes.
    let bad = dir
        .write(
            "bad.toml",
            &definitions(&lab, r#""8080:80", "8080:81""#, ""),
        )
        .expect("write");
    let out = netbpf(&lab.host, &["apply", "-c", bad.to_str().expect("UTF-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("container \"web1\": ports: entry \"8080:81\": host port 8080/tcp on 0.0.0.0 is already published"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(ports(&lab), second);
}
