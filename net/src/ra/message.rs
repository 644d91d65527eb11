//! The router advertisement as bytes (RFC 4861 §4.2, RFC 8106 for DNS), and router
//! solicitations read just enough to tell a valid one (§6.1.1). The checksum is left 0: the
//! kernel fills it in for every raw ICMPv6 socket.

use std::net::Ipv6Addr;

use super::RaConfig;

/// ICMPv6 type of a router solicitation.
pub(crate) const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
/// Managed (addresses from DHCPv6) and Other (other settings from DHCPv6).
const FLAGS_M_O: u8 = 0xc0;
/// Prefix information flags: on-link, not autonomous (no SLAAC).
const PREFIX_ON_LINK: u8 = 0x80;
/// Hop limit guests use for what they send (radvd's and Linux's default).
const CUR_HOP_LIMIT: u8 = 64;
/// The prefix never expires: the bridge and its prefix live as long as the cluster.
const INFINITE: u32 = u32::MAX;
/// Lifetime of the RDNSS and DNSSL entries: RFC 8106 §5.1 asks for at least three times the
/// longest gap between advertisements (200 s here).
const DNS_LIFETIME: u32 = 1800;

const OPT_SOURCE_LL: u8 = 1;
const OPT_PREFIX: u8 = 3;
const OPT_MTU: u8 = 5;
const OPT_RDNSS: u8 = 25;
const OPT_DNSSL: u8 = 31;

/// The router advertisement for `config`, checksum 0. Pure: the same bytes every time.
pub fn advertisement(config: &RaConfig) -> Vec<u8> {
    let mut ra = vec![ROUTER_ADVERTISEMENT, 0, 0, 0, CUR_HOP_LIMIT, FLAGS_M_O];
    ra.extend_from_slice(&config.router_lifetime.to_be_bytes());
    // Reachable time and retransmission timer: 0, the guest's own defaults.
    ra.extend_from_slice(&[0; 8]);

    let mut prefix = vec![config.prefix_len, PREFIX_ON_LINK];
    prefix.extend_from_slice(&INFINITE.to_be_bytes()); // valid lifetime
    prefix.extend_from_slice(&INFINITE.to_be_bytes()); // preferred lifetime
    prefix.extend_from_slice(&[0; 4]);
    prefix.extend_from_slice(&config.prefix.octets());
    option(&mut ra, OPT_PREFIX, &prefix);

    if config.mtu != 0 {
        let mut mtu = vec![0, 0];
        mtu.extend_from_slice(&u32::from(config.mtu).to_be_bytes());
        option(&mut ra, OPT_MTU, &mtu);
    }
    if !config.dns.is_empty() {
        let mut rdnss = lifetime_head();
        config.dns.iter().for_each(|ip| rdnss.extend_from_slice(&ip.octets()));
        option(&mut ra, OPT_RDNSS, &rdnss);
    }
    if let Some(name) = dns_name(&config.domain) {
        let mut dnssl = lifetime_head();
        dnssl.extend_from_slice(&name);
        option(&mut ra, OPT_DNSSL, &dnssl);
    }
    ra
}

/// Appends an option: type, length in units of 8 bytes, `body` zero-padded to fit.
fn option(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let units = (body.len() + 2).div_ceil(8);
    out.push(kind);
    out.push(u8::try_from(units).unwrap_or(0));
    out.extend_from_slice(body);
    out.resize(out.len() + units * 8 - body.len() - 2, 0);
}

/// Reserved (2 bytes) and the lifetime that start RDNSS and DNSSL.
fn lifetime_head() -> Vec<u8> {
    let mut head = vec![0, 0];
    head.extend_from_slice(&DNS_LIFETIME.to_be_bytes());
    head
}

/// `domain` as uncompressed DNS labels (RFC 8106 §5.2), or `None` when it is empty or no name.
fn dns_name(domain: &str) -> Option<Vec<u8>> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || domain.len() > 253 {
        return None;
    }
    let mut name = Vec::new();
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        name.push(label.len() as u8);
        name.extend_from_slice(label.as_bytes());
    }
    name.push(0);
    Some(name)
}

/// A router solicitation that passed RFC 4861 §6.1.1's checks (all but the hop limit, which a
/// raw socket does not see; the socket is bound to the bridge, so only on-link senders reach it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Solicitation {
    /// The sender's MAC, when it included its Source Link-Layer Address.
    pub(crate) source_mac: Option<[u8; 6]>,
}

/// Reads an ICMPv6 message from `source` as a router solicitation, or says why it is not one.
pub(crate) fn parse_solicitation(packet: &[u8], source: &Ipv6Addr) -> Result<Solicitation, &'static str> {
    let (head, mut options) = packet.split_at_checked(8).ok_or("shorter than a router solicitation")?;
    if head[0] != ROUTER_SOLICITATION {
        return Err("not a router solicitation");
    }
    if head[1] != 0 {
        return Err("router solicitation with a nonzero code");
    }
    let mut solicitation = Solicitation { source_mac: None };
    while let [kind, units, ..] = *options {
        let len = usize::from(units) * 8;
        if len == 0 || len > options.len() {
            return Err("option of length 0 or past the end");
        }
        if kind == OPT_SOURCE_LL {
            if source.is_unspecified() {
                return Err("source link-layer address from the unspecified address");
            }
            solicitation.source_mac = options[2..len].try_into().ok();
        }
        options = &options[len..];
    }
    if !options.is_empty() {
        return Err("trailing byte after the options");
    }
    Ok(solicitation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RaConfig {
        RaConfig {
            prefix: "fd00::".parse().unwrap(),
            prefix_len: 64,
            mtu: 1500,
            dns: vec!["fd00::1".parse().unwrap()],
            domain: "kvci".into(),
            router_lifetime: 1800,
        }
    }

    #[test]
    fn advertisement_bytes_are_exact() {
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            // type 134, code 0, checksum, hop limit 64, M|O, router lifetime 1800, timers 0
            &[134, 0, 0, 0, 64, 0xc0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0][..],
            // prefix information: /64, L=1 A=0, lifetimes infinite, fd00::
            &[3, 4, 64, 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            // MTU 1500
            &[5, 1, 0, 0, 0, 0, 0x05, 0xdc],
            // RDNSS fd00::1, lifetime 1800
            &[25, 3, 0, 0, 0, 0, 0x07, 0x08, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            // DNSSL "kvci", lifetime 1800, padded to 16 bytes
            &[31, 2, 0, 0, 0, 0, 0x07, 0x08, 4, b'k', b'v', b'c', b'i', 0, 0, 0],
        ]
        .concat();
        assert_eq!(advertisement(&config()), expected);
    }

    #[test]
    fn empty_settings_leave_their_options_out() {
        let c = RaConfig { mtu: 0, dns: vec![], domain: String::new(), ..config() };
        let ra = advertisement(&c);
        assert_eq!(ra.len(), 16 + 32);
        let c = RaConfig { domain: "bad..name".into(), ..config() };
        assert_eq!(advertisement(&c).len(), 16 + 32 + 8 + 24);
    }

    #[test]
    fn dns_names_are_labels() {
        assert_eq!(dns_name("a.bc."), Some(vec![1, b'a', 2, b'b', b'c', 0]));
        assert_eq!(dns_name("it-net"), Some(vec![6, b'i', b't', b'-', b'n', b'e', b't', 0]));
        for bad in ["", ".", "a..b", "a b", &"x".repeat(64)] {
            assert_eq!(dns_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn solicitations_are_checked() {
        let ll: Ipv6Addr = "fe80::5055:ff:fed1:5502".parse().unwrap();
        let with_slla = [133, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 1, 0x52, 0x55, 0, 0xd1, 0x55, 2];
        let node02 = Some([0x52, 0x55, 0, 0xd1, 0x55, 2]);
        assert_eq!(parse_solicitation(&with_slla, &ll), Ok(Solicitation { source_mac: node02 }));
        assert_eq!(parse_solicitation(&with_slla[..8], &Ipv6Addr::UNSPECIFIED), Ok(Solicitation { source_mac: None }));
        assert!(parse_solicitation(&with_slla, &Ipv6Addr::UNSPECIFIED).is_err());
        assert!(parse_solicitation(&with_slla[..7], &ll).is_err());
        assert!(parse_solicitation(&with_slla[..9], &ll).is_err());
        assert!(parse_solicitation(&with_slla[..15], &ll).is_err());
        let mut zero_len = with_slla;
        zero_len[9] = 0;
        assert!(parse_solicitation(&zero_len, &ll).is_err());
        let mut code = with_slla;
        code[1] = 1;
        assert!(parse_solicitation(&code, &ll).is_err());
        assert!(parse_solicitation(&advertisement(&config()), &ll).is_err());
    }

    /// Bounded fuzzing of the one function that reads guest bytes here: never a panic.
    #[test]
    fn random_solicitations_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_0133);
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let seed = [133u8, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x52, 0x55, 0, 0xd1, 0x55, 2, 14, 1, 1, 2, 3, 4, 5, 6];
        let (mut valid, mut total) = (0, 0);
        for run in 0..20_000 {
            let mut packet = seed.to_vec();
            match run % 3 {
                0 => (0..1 + rng.usize(..4)).for_each(|_| packet[rng.usize(..seed.len())] = rng.u8(..)),
                1 => packet.truncate(rng.usize(..=seed.len())),
                _ => {
                    packet.truncate(8);
                    let len = rng.usize(..64);
                    packet.extend(std::iter::repeat_with(|| rng.u8(..4)).take(len));
                }
            }
            let source = if rng.bool() { ll } else { Ipv6Addr::UNSPECIFIED };
            valid += usize::from(parse_solicitation(&packet, &source).is_ok());
            total += 1;
        }
        assert!(valid > 0 && valid < total, "{valid} of {total} valid");
    }
}
