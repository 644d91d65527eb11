//! Reading a client packet: the checks that make it a DHCP client message, and the filter that
//! hands dhcproto only the options the server reads.
//!
//! Why filter: dhcproto 0.14 `debug_assert!`s the length of some options (rapid commit, client
//! FQDN, client network interface, bulk lease query times) and subtracts from others without a
//! check, so one bad option from a guest panics a debug build. The server reads four options;
//! the rest are dropped unread, which also keeps the decoding surface small.

use std::net::Ipv4Addr;

use dhcproto::v4::{Decodable, Decoder, DhcpOption, HType, Message, MessageType, Opcode, OptionCode, MAGIC};

/// Where options start: 236 bytes of fixed header, then the 4-byte magic cookie.
const OPTIONS_START: usize = 240;
const PAD: u8 = 0;
const END: u8 = 255;

/// A packet that passed the checks: a DHCP client message from an Ethernet MAC.
pub(super) struct Request {
    /// The decoded message, holding only the options [`is_read`] keeps.
    pub(super) msg: Message,
    /// Its DHCP message type (option 53).
    pub(super) kind: MessageType,
    /// The client's hardware address.
    pub(super) mac: [u8; 6],
}

/// Decodes and checks a packet, or says why it is not a DHCP client message.
pub(super) fn parse(packet: &[u8]) -> Result<Request, &'static str> {
    // dhcproto takes any 4 bytes as the cookie; without the real one this is BOOTP or noise.
    if packet.get(OPTIONS_START - 4..OPTIONS_START) != Some(&MAGIC[..]) {
        return Err("no DHCP magic cookie");
    }
    let packet = keep_read_options(packet);
    let msg = Message::decode(&mut Decoder::new(&packet)).map_err(|_| "cannot decode")?;
    if msg.opcode() != Opcode::BootRequest {
        return Err("not a BOOTREQUEST");
    }
    // hlen is checked before chaddr() is called: dhcproto slices chaddr by hlen and would
    // panic on hlen > 16.
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err("not an Ethernet hardware address");
    }
    let mac = <[u8; 6]>::try_from(msg.chaddr()).map_err(|_| "not an Ethernet hardware address")?;
    let kind = msg.opts().msg_type().ok_or("no DHCP message type")?;
    Ok(Request { msg, kind, mac })
}

/// The address a REQUEST asks for: option 50 while selecting or rebooting, else `ciaddr`.
pub(super) fn requested_ip(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => Some(msg.ciaddr()).filter(|ip| !ip.is_unspecified()),
    }
}

/// The options the server looks at.
fn is_read(code: u8) -> bool {
    matches!(
        OptionCode::from(code),
        OptionCode::MessageType
            | OptionCode::ServerIdentifier
            | OptionCode::RequestedIpAddress
            | OptionCode::ClientIdentifier
    )
}

/// `packet` (at least [`OPTIONS_START`] long) with only the options [`is_read`] keeps, in their
/// order, then End. A truncated option ends the list, as it does in dhcproto.
fn keep_read_options(packet: &[u8]) -> Vec<u8> {
    let (head, mut rest) = packet.split_at(OPTIONS_START.min(packet.len()));
    let mut kept = head.to_vec();
    while let Some((&code, tail)) = rest.split_first() {
        match code {
            PAD => rest = tail,
            END => break,
            _ => {
                let Some((&len, tail)) = tail.split_first() else { break };
                if tail.len() < usize::from(len) {
                    break;
                }
                let (value, after) = tail.split_at(usize::from(len));
                if is_read(code) {
                    kept.extend_from_slice(&[code, len]);
                    kept.extend_from_slice(value);
                }
                rest = after;
            }
        }
    }
    kept.push(END);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut p = vec![0u8; OPTIONS_START];
        p[OPTIONS_START - 4..].copy_from_slice(&MAGIC);
        p
    }

    #[test]
    fn only_read_options_are_kept() {
        let mut p = header();
        // pad, hostname "ab", message type 1, rapid commit with a bad length, server id, end, junk
        p.extend_from_slice(&[0, 12, 2, b'a', b'b', 53, 1, 1, 80, 1, 9, 54, 4, 10, 0, 0, 1, 255, 7, 7]);
        let kept = keep_read_options(&p);
        assert_eq!(&kept[OPTIONS_START..], &[53, 1, 1, 54, 4, 10, 0, 0, 1, 255]);
        assert_eq!(&kept[..OPTIONS_START], &p[..OPTIONS_START]);
    }

    #[test]
    fn truncated_options_end_the_list() {
        let mut p = header();
        p.extend_from_slice(&[53, 1, 3, 61, 9, 1, 2]);
        assert_eq!(&keep_read_options(&p)[OPTIONS_START..], &[53, 1, 3, 255]);
        let mut p = header();
        p.extend_from_slice(&[53, 1, 3, 61]);
        assert_eq!(&keep_read_options(&p)[OPTIONS_START..], &[53, 1, 3, 255]);
        assert_eq!(&keep_read_options(&header())[OPTIONS_START..], &[255]);
    }

    #[test]
    fn options_that_panic_dhcproto_are_never_decoded() {
        // Each of these trips a debug_assert (or an unchecked subtraction) in dhcproto 0.14.
        for bad in [[80u8, 1, 0], [94, 1, 0], [81, 1, 0], [151, 0, 0], [152, 1, 0]] {
            let mut p = header();
            p[..3].copy_from_slice(&[1, 1, 6]);
            p.extend_from_slice(&[53, 1, 1]);
            p.extend_from_slice(&bad);
            let request = parse(&p).unwrap();
            assert_eq!(request.kind, MessageType::Discover);
        }
    }
}
