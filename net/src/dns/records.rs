//! The cluster's names as DNS records, and the hickory zones that serve them.
//!
//! Zone layout (hickory's `Catalog` picks the zone whose origin is the longest suffix of the
//! query name, so each name needs a zone above it):
//! - `<cluster>.` holds `node01.<cluster>.`, `registry.<cluster>.`, … (A and AAAA) — what a
//!   stub resolver with `search <cluster>` asks for a bare `node01`.
//! - one tiny zone per host name, `node01.`, `registry.`, … holding only its apex record — what
//!   busybox nslookup and other clients without a search list send. A zone per name (instead of
//!   one root zone) keeps the root free for the forwarder, so every other single-label name
//!   is still forwarded rather than answered NXDOMAIN here.
//! - one reverse zone per /24 the addresses live in (`66.168.192.in-addr.arpa.`): the cluster
//!   owns its subnet, so reverse lookups of unassigned addresses get an authoritative NXDOMAIN
//!   instead of leaking private addresses to the upstream resolvers. For IPv6 likewise one zone
//!   per /64 (`0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.` for `fd00::/64`).
//!
//! Names are lowercased when the zone is built; hickory compares names case-insensitively.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::authority::ZoneType;
use hickory_server::proto::rr::rdata::{A, AAAA, PTR, SOA};
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
    /// Single-label host names and their IPv4 addresses (A records), e.g.
    /// `("node01", 192.168.66.101)`, `("registry", 192.168.66.2)`. An address listed twice points
    /// back to its first name.
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// The same for IPv6 (AAAA records), e.g. `("node01", fd00::101)`. A name may be in both
    /// lists or in one: an IPv6-only node has no A record, an IPv4-only one no AAAA.
    pub hosts6: Vec<(String, Ipv6Addr)>,
}

/// One zone's records, before hickory's SOA is added.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The zone's origin, e.g. `kvci.` or `66.168.192.in-addr.arpa.`.
    pub origin: Name,
    /// A, AAAA and PTR records inside the zone.
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
        let mut reverse: BTreeMap<IpAddr, Name> = BTreeMap::new();

        let v4 = self.hosts.iter().map(|(h, a)| (h, IpAddr::V4(*a)));
        let v6 = self.hosts6.iter().map(|(h, a)| (h, IpAddr::V6(*a)));
        for (host, addr) in v4.chain(v6) {
            let label = host.strip_suffix('.').unwrap_or(host);
            check_label(host, label)?;
            let bare = fqdn(host, label)?;
            let full = append(host, &bare, &domain)?;
            let rdata = match addr {
                IpAddr::V4(ip) => RData::A(A(ip)),
                IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
            };
            let record = |name: &Name| Record::from_rdata(name.clone(), RECORD_TTL, rdata.clone());
            zones.entry(domain.clone()).or_default().push(record(&full));
            // A host named like the cluster lands at the cluster zone's apex via the same entry.
            zones.entry(bare.clone()).or_default().push(record(&bare));
            reverse.entry(addr).or_insert(full);
        }

        for (addr, target) in reverse {
            let (origin, owner) = reverse_names(addr)?;
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

/// The reverse zone `addr` lies in (its /24 or /64) and its PTR owner name in that zone.
fn reverse_names(addr: IpAddr) -> Result<(Name, Name), DnsError> {
    match addr {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            let origin = fqdn_unchecked(&format!("{c}.{b}.{a}.in-addr.arpa"))?;
            let owner = fqdn_unchecked(&format!("{d}.{c}.{b}.{a}.in-addr.arpa"))?;
            Ok((origin, owner))
        }
        IpAddr::V6(ip) => {
            // One label per nibble, least significant first (RFC 3596 section 2.5).
            let mut nibbles = String::with_capacity(64);
            for byte in ip.octets().iter().rev() {
                let _ = write!(nibbles, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            let owner = fqdn_unchecked(&format!("{nibbles}ip6.arpa"))?;
            // The /64's zone: drop the 16 nibble labels of the interface identifier.
            let origin = fqdn_unchecked(&format!("{}ip6.arpa", &nibbles[32..]))?;
            Ok((origin, owner))
        }
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
mod tests;
