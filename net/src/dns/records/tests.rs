use std::net::Ipv6Addr;

use super::*;

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last)
}

fn zone() -> ClusterZone {
    ClusterZone {
        cluster: "kvci".into(),
        hosts: vec![
            ("node01".into(), Ipv4Addr::new(192, 168, 66, 101)),
            ("Node02".into(), Ipv4Addr::new(192, 168, 66, 102)),
            ("registry".into(), Ipv4Addr::new(192, 168, 66, 2)),
            ("nfs".into(), Ipv4Addr::new(192, 168, 66, 2)),
        ],
        hosts6: vec![
            ("node01".into(), v6(0x101)),
            ("Node02".into(), v6(0x102)),
            ("registry".into(), v6(1)),
            ("nfs".into(), v6(1)),
        ],
    }
}

fn rendered(zones: &[Zone]) -> Vec<String> {
    zones
        .iter()
        .flat_map(|z| z.records.iter().map(move |r| format!("{} {r}", z.origin)))
        .collect()
}

fn has(lines: &[String], origin: &str, owner: &str, kind: &str, data: &str) -> bool {
    lines.iter().any(|l| {
        l.starts_with(&format!("{origin} {owner} "))
            && l.contains(&format!(" {kind} "))
            && l.ends_with(data)
    })
}

/// The /64 reverse zone of fd00::/64.
const REV6: &str = "0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";

#[test]
fn every_host_is_named_bare_and_under_the_cluster() {
    let lines = rendered(&zone().zones().unwrap());
    for (origin, owner, data) in [
        ("kvci.", "node01.kvci.", "192.168.66.101"),
        ("node01.", "node01.", "192.168.66.101"),
        ("node02.", "node02.", "192.168.66.102"),
        ("kvci.", "nfs.kvci.", "192.168.66.2"),
        ("registry.", "registry.", "192.168.66.2"),
    ] {
        assert!(has(&lines, origin, owner, "A", data), "{owner} {lines:#?}");
    }
}

#[test]
fn every_host_has_its_ipv6_address_bare_and_under_the_cluster() {
    let lines = rendered(&zone().zones().unwrap());
    for (origin, owner, data) in [
        ("kvci.", "node01.kvci.", "fd00::101"),
        ("node01.", "node01.", "fd00::101"),
        ("kvci.", "node02.kvci.", "fd00::102"),
        ("node02.", "node02.", "fd00::102"),
        ("kvci.", "registry.kvci.", "fd00::1"),
        ("registry.", "registry.", "fd00::1"),
        ("nfs.", "nfs.", "fd00::1"),
    ] {
        assert!(
            has(&lines, origin, owner, "AAAA", data),
            "{owner} {lines:#?}"
        );
    }
}

#[test]
fn addresses_point_back_to_their_first_name() {
    let lines = rendered(&zone().zones().unwrap());
    let rev = "66.168.192.in-addr.arpa.";
    assert!(has(
        &lines,
        rev,
        "101.66.168.192.in-addr.arpa.",
        "PTR",
        "node01.kvci."
    ));
    assert!(has(
        &lines,
        rev,
        "2.66.168.192.in-addr.arpa.",
        "PTR",
        "registry.kvci."
    ));
    assert!(!has(
        &lines,
        rev,
        "2.66.168.192.in-addr.arpa.",
        "PTR",
        "nfs.kvci."
    ));
}

#[test]
fn ipv6_addresses_point_back_to_their_first_name_in_nibble_form() {
    let lines = rendered(&zone().zones().unwrap());
    let node01 = format!("1.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.{REV6}");
    let bridge = format!("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.{REV6}");
    assert!(
        has(&lines, REV6, &node01, "PTR", "node01.kvci."),
        "{lines:#?}"
    );
    assert!(
        has(&lines, REV6, &bridge, "PTR", "registry.kvci."),
        "{lines:#?}"
    );
    assert!(!has(&lines, REV6, &bridge, "PTR", "nfs.kvci."));
    let (origin, owner) = reverse_names(IpAddr::V6("2001:db8::abcd".parse().unwrap())).unwrap();
    assert_eq!(
        origin.to_string(),
        "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    );
    assert_eq!(
        owner.to_string(),
        "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    );
}

#[test]
fn ipv6_only_hosts_have_no_a_record_and_ipv4_only_no_aaaa() {
    let mut only6 = zone();
    only6.hosts.retain(|(h, _)| h == "registry");
    let lines = rendered(&only6.zones().unwrap());
    assert!(has(&lines, "kvci.", "node01.kvci.", "AAAA", "fd00::101"));
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("node01.kvci. ") && l.contains(" A ")),
        "{lines:#?}"
    );
    assert!(!lines
        .iter()
        .any(|l| l.contains("101.66.168.192.in-addr.arpa.")));

    let mut only4 = zone();
    only4.hosts6.clear();
    let lines = rendered(&only4.zones().unwrap());
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(" AAAA ") || l.contains("ip6.arpa")),
        "{lines:#?}"
    );
}

#[test]
fn host_named_like_the_cluster_shares_its_zone() {
    let mut z = zone();
    z.hosts
        .push(("KVCI".into(), Ipv4Addr::new(192, 168, 66, 9)));
    z.hosts6.push(("KVCI".into(), v6(9)));
    let zones = z.zones().unwrap();
    let origins: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
    assert_eq!(origins.iter().filter(|o| *o == "kvci.").count(), 1);
    assert_eq!(z.authorities().unwrap().len(), zones.len());
}

#[test]
fn authorities_are_built_for_every_zone() {
    // kvci., node01., node02., registry., nfs., 66.168.192.in-addr.arpa., the fd00::/64 zone.
    let zones = zone().zones().unwrap();
    let origins: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
    assert!(origins.contains(&REV6.to_string()), "{origins:?}");
    assert_eq!(zone().authorities().unwrap().len(), 7);
}

#[test]
fn unusable_names_are_rejected() {
    for bad in ["", "a.b", "sp ace", "x\\.y", &"n".repeat(64)] {
        let mut z = zone();
        z.hosts.push((bad.into(), Ipv4Addr::LOCALHOST));
        assert!(
            matches!(z.zones(), Err(DnsError::InvalidName { .. })),
            "{bad:?}"
        );
        let mut z = zone();
        z.hosts6.push((bad.into(), Ipv6Addr::LOCALHOST));
        assert!(
            matches!(z.zones(), Err(DnsError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    for bad in ["", ".", "a..b", "a b"] {
        let z = ClusterZone {
            cluster: bad.into(),
            hosts: vec![],
            hosts6: vec![],
        };
        assert!(z.domain().is_err(), "{bad:?}");
    }
    let dotted = ClusterZone {
        cluster: "Lab.Example.".into(),
        hosts: vec![],
        hosts6: vec![],
    };
    assert_eq!(dotted.domain().unwrap().to_string(), "lab.example.");
}
