//! The cluster's names as DNS records, and the hickory zones that serve them.
//!
//! Zone layout (hickory's `Catalog` picks the zone whose origin is the longest suffix of the
//! query name, so each name needs a zone above it):
//! - `<cluster>.` holds `node01.<cluster>.`, `registry.<cluster>.`, … — what a stub resolver
//!   with `search <cluster>` asks for a bare `node01`.
//! - one tiny zone per host name, `node01.`, `registry.`, … holding only its apex record — what
//!   busybox nslookup and other clients without a search list send. A zone per name (instead of
//!   one root zone) keeps the root free for the forwarder, so every other single-label name
//!   is still forwarded rather than answered NXDOMAIN here.
//! - one reverse zone per /24 the addresses live in (`66.168.192.in-addr.arpa.`): the cluster
//!   owns its subnet, so reverse lookups of unassigned addresses get an authoritative NXDOMAIN
//!   instead of leaking private addresses to the upstream resolvers.
//!
//! Names are lowercased when the zone is built; hickory compares names case-insensitively.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hickory_server::authority::ZoneType;
use hickory_server::proto::rr::rdata::{A, PTR, SOA};
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::store::in_memory::InMemoryAuthority;

use super::DnsError;

/// TTL of the cluster's records. Short, because a cluster of the same name may be recreated
/// with other addresses while guests or the host still cache the old answers.
pub const RECORD_TTL: u32 = 60;

/// How long "no such name" may be cached (the SOA minimum), short for the same reason.
const NEGATIVE_TTL: u32 = 10;

/// The zones never change while the server runs, so one serial is enough.
const SERIAL: u32 = 1;

/// The names a cluster's DNS server answers for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterZone {
    /// The cluster's name, which is also its DNS domain, e.g. `"kvci"`.
    pub cluster: String,
    /// Single-label host names and their addresses, e.g. `("node01", 192.168.66.101)`,
    /// `("registry", 192.168.66.2)`. An address listed twice points back to its first name.
    pub hosts: Vec<(String, Ipv4Addr)>,
}

/// One zone's records, before hickory's SOA is added.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The zone's origin, e.g. `kvci.` or `66.168.192.in-addr.arpa.`.
    pub origin: Name,
    /// A and PTR records inside the zone.
    pub records: Vec<Record>,
}

impl ClusterZone {
    /// The cluster's domain, `<cluster>.`, lowercased.
    pub fn domain(&self) -> Result<Name, DnsError> {
        let cluster = self.cluster.strip_suffix('.').unwrap_or(&self.cluster);
        if cluster.is_empty() {
            return Err(invalid(&self.cluster, "empty"));
        }
        for label in cluster.split('.') {
            check_label(&self.cluster, label)?;
        }
        fqdn(&self.cluster, cluster)
    }

    /// The zones with their records, as laid out in the module documentation, ordered by origin.
    pub fn zones(&self) -> Result<Vec<Zone>, DnsError> {
        let domain = self.domain()?;
        let mut zones: BTreeMap<Name, Vec<Record>> = BTreeMap::new();
        // First name per address, for PTR: several names may share the bridge address.
        let mut reverse: BTreeMap<Ipv4Addr, Name> = BTreeMap::new();

        for (host, addr) in &self.hosts {
            let label = host.strip_suffix('.').unwrap_or(host);
            check_label(host, label)?;
            let bare = fqdn(host, label)?;
            let full = append(host, &bare, &domain)?;
            let a = |name: &Name| Record::from_rdata(name.clone(), RECORD_TTL, RData::A(A(*addr)));
            zones.entry(domain.clone()).or_default().push(a(&full));
            // A host named like the cluster lands at the cluster zone's apex via the same entry.
            zones.entry(bare.clone()).or_default().push(a(&bare));
            reverse.entry(*addr).or_insert(full);
        }

        for (addr, target) in reverse {
            let [a, b, c, d] = addr.octets();
            let origin = fqdn_unchecked(&format!("{c}.{b}.{a}.in-addr.arpa"))?;
            let owner = fqdn_unchecked(&format!("{d}.{c}.{b}.{a}.in-addr.arpa"))?;
            let ptr = Record::from_rdata(owner, RECORD_TTL, RData::PTR(PTR(target)));
            zones.entry(origin).or_default().push(ptr);
        }

        Ok(zones
            .into_iter()
            .map(|(origin, records)| Zone { origin, records })
            .collect())
    }

    /// hickory authorities serving [`ClusterZone::zones`], each with its SOA, ready for a
    /// `Catalog` under its origin.
    pub fn authorities(&self) -> Result<Vec<InMemoryAuthority>, DnsError> {
        let domain = self.domain()?;
        let hostmaster = append(&self.cluster, &fqdn_unchecked("hostmaster")?, &domain)?;
        self.zones()?
            .into_iter()
            .map(|zone| {
                let mut authority =
                    InMemoryAuthority::empty(zone.origin.clone(), ZoneType::Primary, false);
                let soa = SOA::new(
                    domain.clone(),
                    hostmaster.clone(),
                    SERIAL,
                    3600,
                    600,
                    86400,
                    NEGATIVE_TTL,
                );
                let soa = Record::from_rdata(zone.origin.clone(), RECORD_TTL, RData::SOA(soa));
                for record in std::iter::once(soa).chain(zone.records) {
                    if !authority.upsert_mut(record.clone(), SERIAL) {
                        return Err(DnsError::Record {
                            zone: zone.origin.to_string(),
                            record: record.name().to_string(),
                        });
                    }
                }
                Ok(authority)
            })
            .collect()
    }
}

/// Host names are plain hostname labels; dots or escapes would silently make other names.
fn check_label(given: &str, label: &str) -> Result<(), DnsError> {
    if label.is_empty() {
        return Err(invalid(given, "empty label"));
    }
    if label.len() > 63 {
        return Err(invalid(given, "label longer than 63 bytes"));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            given,
            "only letters, digits, '-' and '_' are allowed",
        ));
    }
    Ok(())
}

/// `text.` lowercased, reporting `given` on failure.
fn fqdn(given: &str, text: &str) -> Result<Name, DnsError> {
    Name::from_ascii(format!("{}.", text.to_ascii_lowercase()))
        .map_err(|_| invalid(given, "not a valid DNS name"))
}

/// For names built here from numbers and constants.
fn fqdn_unchecked(text: &str) -> Result<Name, DnsError> {
    fqdn(text, text)
}

fn append(given: &str, name: &Name, domain: &Name) -> Result<Name, DnsError> {
    name.clone()
        .append_domain(domain)
        .map_err(|_| invalid(given, "too long under the cluster domain"))
}

fn invalid(name: &str, reason: &'static str) -> DnsError {
    DnsError::InvalidName {
        name: name.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> ClusterZone {
        ClusterZone {
            cluster: "kvci".into(),
            hosts: vec![
                ("node01".into(), Ipv4Addr::new(192, 168, 66, 101)),
                ("Node02".into(), Ipv4Addr::new(192, 168, 66, 102)),
                ("registry".into(), Ipv4Addr::new(192, 168, 66, 2)),
                ("nfs".into(), Ipv4Addr::new(192, 168, 66, 2)),
            ],
        }
    }

    fn rendered(zones: &[Zone]) -> Vec<String> {
        zones
            .iter()
            .flat_map(|z| z.records.iter().map(move |r| format!("{} {r}", z.origin)))
            .collect()
    }

    fn has(lines: &[String], origin: &str, owner: &str, data: &str) -> bool {
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{origin} {owner} ")) && l.ends_with(data))
    }

    #[test]
    fn every_host_is_named_bare_and_under_the_cluster() {
        let lines = rendered(&zone().zones().unwrap());
        assert!(
            has(&lines, "kvci.", "node01.kvci.", "192.168.66.101"),
            "{lines:#?}"
        );
        assert!(
            has(&lines, "node01.", "node01.", "192.168.66.101"),
            "{lines:#?}"
        );
        assert!(
            has(&lines, "node02.", "node02.", "192.168.66.102"),
            "{lines:#?}"
        );
        assert!(
            has(&lines, "kvci.", "nfs.kvci.", "192.168.66.2"),
            "{lines:#?}"
        );
        assert!(
            has(&lines, "registry.", "registry.", "192.168.66.2"),
            "{lines:#?}"
        );
    }

    #[test]
    fn addresses_point_back_to_their_first_name() {
        let lines = rendered(&zone().zones().unwrap());
        let rev = "66.168.192.in-addr.arpa.";
        assert!(has(
            &lines,
            rev,
            "101.66.168.192.in-addr.arpa.",
            "node01.kvci."
        ));
        assert!(has(
            &lines,
            rev,
            "2.66.168.192.in-addr.arpa.",
            "registry.kvci."
        ));
        assert!(!has(&lines, rev, "2.66.168.192.in-addr.arpa.", "nfs.kvci."));
    }

    #[test]
    fn host_named_like_the_cluster_shares_its_zone() {
        let mut z = zone();
        z.hosts
            .push(("KVCI".into(), Ipv4Addr::new(192, 168, 66, 9)));
        let zones = z.zones().unwrap();
        let origins: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
        assert_eq!(origins.iter().filter(|o| *o == "kvci.").count(), 1);
        assert_eq!(z.authorities().unwrap().len(), zones.len());
    }

    #[test]
    fn authorities_are_built_for_every_zone() {
        // kvci., node01., node02., registry., nfs., 66.168.192.in-addr.arpa.
        assert_eq!(zone().authorities().unwrap().len(), 6);
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
        }
        for bad in ["", ".", "a..b", "a b"] {
            let z = ClusterZone {
                cluster: bad.into(),
                hosts: vec![],
            };
            assert!(z.domain().is_err(), "{bad:?}");
        }
        let dotted = ClusterZone {
            cluster: "Lab.Example.".into(),
            hosts: vec![],
        };
        assert_eq!(dotted.domain().unwrap().to_string(), "lab.example.");
    }
}
