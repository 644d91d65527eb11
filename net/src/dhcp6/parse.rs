//! Reading a client message, by hand: the header and the four options the server uses (Client
//! and Server Identifier, IA_NA with its addresses, Rapid Commit). Everything else is skipped
//! unread, after its length is checked.
//!
//! Why not dhcproto's decoder: in 0.14 it subtracts without a check from the lengths of Status
//! Code, Vendor Class and Vendor-specific options (a debug build panics on a short one), reads
//! fixed-size options whatever their length says (so one bad length shifts every option after
//! it), and stops at the first bad option without an error. Worst, it decodes options nested in
//! IA_NA, IA_PD, Vendor-specific and Relay options recursively with no depth limit: an 8 KB
//! datagram of nested IA_NAs overflows a 2 MiB thread stack, which aborts the whole process
//! (no panic to catch). This parser never recurses: it looks one level into IA_NA and no
//! further.

use std::net::Ipv6Addr;

use dhcproto::v6::MessageType;

const CLIENT_ID: u16 = 1;
const SERVER_ID: u16 = 2;
const IA_NA: u16 = 3;
const IA_ADDR: u16 = 5;
const RAPID_COMMIT: u16 = 14;

/// IA_NAs read per message; more are skipped, so one reply stays well inside a datagram.
pub(super) const MAX_IAS: usize = 8;
/// Addresses read per IA_NA.
const MAX_ADDRS: usize = 8;
/// RFC 8415 §11.1: a DUID is a 2-byte type and 1 to 128 bytes.
const DUID_LEN: std::ops::RangeInclusive<usize> = 3..=130;

/// An IA_NA as the client sent it: its IAID and the addresses it names (hints or bindings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IaNa {
    pub(super) id: u32,
    pub(super) addrs: Vec<Ipv6Addr>,
}

/// A message that passed the checks. Whether its options suit its type is the server's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request<'a> {
    pub(super) kind: MessageType,
    pub(super) xid: [u8; 3],
    pub(super) client_id: Option<&'a [u8]>,
    pub(super) server_id: Option<&'a [u8]>,
    pub(super) ia_nas: Vec<IaNa>,
    pub(super) rapid_commit: bool,
}

/// Reads a message, or says why it is malformed: too short, an option running past its
/// container, a duplicate or wrongly sized identifier, a Rapid Commit with data.
pub(super) fn parse(packet: &[u8]) -> Result<Request<'_>, &'static str> {
    if packet.len() < 4 {
        return Err("shorter than a DHCPv6 header");
    }
    let mut request = Request {
        kind: MessageType::from(packet[0]),
        xid: [packet[1], packet[2], packet[3]],
        client_id: None,
        server_id: None,
        ia_nas: Vec::new(),
        rapid_commit: false,
    };
    for option in options(&packet[4..]) {
        let (code, value) = option?;
        match code {
            CLIENT_ID => set_duid(&mut request.client_id, value, "two Client Identifier options")?,
            SERVER_ID => set_duid(&mut request.server_id, value, "two Server Identifier options")?,
            IA_NA => {
                let ia = ia_na(value)?;
                if request.ia_nas.len() < MAX_IAS {
                    request.ia_nas.push(ia);
                }
            }
            RAPID_COMMIT if !value.is_empty() => return Err("Rapid Commit option with data"),
            RAPID_COMMIT => request.rapid_commit = true,
            _ => {}
        }
    }
    Ok(request)
}

fn set_duid<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8], twice: &'static str) -> Result<(), &'static str> {
    if slot.is_some() {
        return Err(twice);
    }
    if !DUID_LEN.contains(&value.len()) {
        return Err("identifier of a size no DUID has");
    }
    *slot = Some(value);
    Ok(())
}

/// IA_NA (RFC 8415 §21.4): IAID, T1, T2, then options, of which only IA Addresses are read.
fn ia_na(value: &[u8]) -> Result<IaNa, &'static str> {
    let (head, rest) = value.split_at_checked(12).ok_or("IA_NA shorter than 12 bytes")?;
    let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let mut addrs = Vec::new();
    for option in options(rest) {
        let (code, value) = option?;
        if code == IA_ADDR {
            // RFC 8415 §21.6: address, preferred and valid lifetime, then options (not read).
            let addr: [u8; 16] = value.get(..16).and_then(|a| a.try_into().ok()).ok_or("IA Address too short")?;
            if value.len() < 24 {
                return Err("IA Address too short");
            }
            if addrs.len() < MAX_ADDRS {
                addrs.push(Ipv6Addr::from(addr));
            }
        }
    }
    Ok(IaNa { id, addrs })
}

/// The options in `data` as (code, value), or an error for one that does not fit; iteration
/// stops after an error.
fn options(mut data: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), &'static str>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let item = split_option(data);
        data = item.map(|(_, _, rest)| rest).unwrap_or_default();
        Some(item.map(|(code, value, _)| (code, value)))
    })
}

fn split_option(data: &[u8]) -> Result<(u16, &[u8], &[u8]), &'static str> {
    let (head, rest) = data.split_at_checked(4).ok_or("option header cut short")?;
    let code = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let (value, rest) = rest.split_at_checked(len).ok_or("option longer than its container")?;
    Ok((code, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(code: u16, value: &[u8]) -> Vec<u8> {
        let mut o = code.to_be_bytes().to_vec();
        o.extend_from_slice(&(value.len() as u16).to_be_bytes());
        o.extend_from_slice(value);
        o
    }

    fn message(options: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![1, 0xab, 0xcd, 0xef];
        options.iter().for_each(|o| p.extend_from_slice(o));
        p
    }

    const DUID: [u8; 10] = [0, 3, 0, 1, 0x52, 0x55, 0, 0xd1, 0x55, 2];

    fn ia_with(addr: &str) -> Vec<u8> {
        let mut ia = vec![0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut a = addr.parse::<Ipv6Addr>().unwrap().octets().to_vec();
        a.extend_from_slice(&[0; 8]);
        ia.extend(opt(IA_ADDR, &a));
        ia.extend(opt(13, &[0, 0])); // a status code: skipped
        ia
    }

    #[test]
    fn the_read_options_are_found_and_others_skipped() {
        let ia = opt(IA_NA, &ia_with("fd00::102"));
        let p = message(&[opt(8, &[0, 0]), opt(CLIENT_ID, &DUID), ia, opt(6, &[0, 23]), opt(RAPID_COMMIT, &[])]);
        let r = parse(&p).unwrap();
        assert_eq!(r.kind, MessageType::Solicit);
        assert_eq!(r.xid, [0xab, 0xcd, 0xef]);
        assert_eq!(r.client_id, Some(&DUID[..]));
        assert_eq!(r.server_id, None);
        assert_eq!(r.ia_nas, [IaNa { id: 7, addrs: vec!["fd00::102".parse().unwrap()] }]);
        assert!(r.rapid_commit);
    }

    #[test]
    fn broken_framing_is_malformed() {
        let cut = |mut v: Vec<u8>, n: usize| {
            v.truncate(v.len() - n);
            v
        };
        let bad = [
            vec![],
            vec![1, 0, 0],
            message(&[cut(opt(CLIENT_ID, &DUID), 1)]),
            message(&[vec![0, 1, 0]]),
            message(&[opt(CLIENT_ID, &DUID), opt(CLIENT_ID, &DUID)]),
            message(&[opt(SERVER_ID, &DUID), opt(SERVER_ID, &DUID)]),
            message(&[opt(CLIENT_ID, &[0, 3])]),
            message(&[opt(CLIENT_ID, &[7; 131])]),
            message(&[opt(RAPID_COMMIT, &[0])]),
            message(&[opt(IA_NA, &[0; 11])]),
            message(&[opt(IA_NA, &cut(ia_with("fd00::1"), 1))]),
            message(&[opt(IA_NA, &[[0; 12].as_slice(), &opt(IA_ADDR, &[0; 23])].concat())]),
        ];
        for (i, p) in bad.iter().enumerate() {
            assert!(parse(p).is_err(), "packet {i} should be malformed: {p:02x?}");
        }
        // The header alone is a (useless) message.
        assert!(parse(&[11, 0, 0, 0]).is_ok());
    }

    #[test]
    fn options_that_break_dhcproto_are_skipped_unread() {
        // Status Code, Vendor Class and Vendor-specific shorter than their fixed part (dhcproto
        // subtracts and panics), and an IA_NA nested 600 deep (dhcproto overflows the stack).
        let mut nested = Vec::new();
        for _ in 0..600 {
            nested = opt(IA_NA, &[[0; 12].as_slice(), &nested].concat());
        }
        for bad in [opt(13, &[1]), opt(16, &[0, 0]), opt(17, &[0]), nested] {
            let p = message(&[opt(CLIENT_ID, &DUID), bad, opt(8, &[0, 0])]);
            let r = parse(&p).unwrap();
            assert_eq!(r.client_id, Some(&DUID[..]));
        }
    }

    #[test]
    fn extra_ias_and_addresses_are_not_read() {
        let ias: Vec<_> = (0..20).map(|_| opt(IA_NA, &ia_with("fd00::5"))).collect();
        assert_eq!(parse(&message(&ias)).unwrap().ia_nas.len(), MAX_IAS);
        let mut ia = vec![0; 12];
        for _ in 0..20 {
            ia.extend(opt(IA_ADDR, &[0; 24]));
        }
        assert_eq!(parse(&message(&[opt(IA_NA, &ia)])).unwrap().ia_nas[0].addrs.len(), MAX_ADDRS);
    }
}
