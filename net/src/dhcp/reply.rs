//! What a reply says and where it goes: the fields and options of OFFER, ACK and NAK following
//! RFC 2131 §4.3.1 (table 3), and the §4.1 rule choosing broadcast or unicast.

use dhcproto::v4::{DhcpOption, Encodable, EncodeError, Message, MessageType, Opcode, OptionCode, MIN_PACKET_SIZE};

use super::config::{DhcpConfig, INFINITE};
use super::lease::StaticLease;
use super::server::ReplyTo;

/// DHCPOFFER of `lease` (answering a DISCOVER).
pub(super) fn offer(config: &DhcpConfig, request: &Message, lease: &StaticLease) -> Message {
    with_lease(config, request, lease, MessageType::Offer)
}

/// DHCPACK of `lease` (answering a REQUEST).
pub(super) fn ack(config: &DhcpConfig, request: &Message, lease: &StaticLease) -> Message {
    with_lease(config, request, lease, MessageType::Ack)
}

/// DHCPACK answering an INFORM: parameters only. §4.3.5: no yiaddr and no lease time, since
/// the client configured its address itself and holds no lease.
pub(super) fn inform_ack(config: &DhcpConfig, request: &Message, lease: &StaticLease) -> Message {
    let mut reply = base(config, request, MessageType::Ack);
    parameters(config, lease, &mut reply);
    reply
}

/// DHCPNAK; `why` goes into option 56 so a guest's log says what was wrong.
pub(super) fn nak(config: &DhcpConfig, request: &Message, why: &str) -> Message {
    let mut reply = base(config, request, MessageType::Nak);
    reply.opts_mut().insert(DhcpOption::Message(why.to_string()));
    reply
}

/// Where `reply` (of type `kind`) to `request` goes, RFC 2131 §4.1 for a server with no relay
/// in between: NAKs are always broadcast; OFFER and ACK go to `ciaddr` when the client has an
/// address, and are broadcast otherwise. (§4.1 would rather unicast to `yiaddr` when the
/// broadcast flag is clear, but that needs an ARP entry forged for a client that cannot answer
/// ARP yet, i.e. a raw socket; every client accepts the broadcast instead.)
pub(super) fn destination(request: &Message, kind: MessageType) -> ReplyTo {
    if kind == MessageType::Nak || request.ciaddr().is_unspecified() {
        ReplyTo::Broadcast
    } else {
        ReplyTo::Unicast(request.ciaddr())
    }
}

/// The wire bytes of `reply`, padded to 300 bytes: RFC 1542 §2.1 lets relays and old BOOTP
/// clients drop anything shorter, and padding after the End option is harmless.
pub(super) fn encode(reply: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut bytes = reply.to_vec()?;
    if bytes.len() < MIN_PACKET_SIZE {
        bytes.resize(MIN_PACKET_SIZE, 0);
    }
    Ok(bytes)
}

fn with_lease(config: &DhcpConfig, request: &Message, lease: &StaticLease, kind: MessageType) -> Message {
    let mut reply = base(config, request, kind);
    reply.set_yiaddr(lease.ip);
    parameters(config, lease, &mut reply);
    let opts = reply.opts_mut();
    opts.insert(DhcpOption::AddressLeaseTime(config.lease_secs));
    // T1/T2 are meaningless for a lease that never ends, and some clients would renew at
    // 2^31 s anyway; RFC 2131 §4.4.5's defaults (50 %, 87.5 %) otherwise.
    if config.lease_secs != INFINITE {
        opts.insert(DhcpOption::Renewal(config.lease_secs / 2));
        let rebinding = u64::from(config.lease_secs) * 7 / 8;
        opts.insert(DhcpOption::Rebinding(u32::try_from(rebinding).unwrap_or(config.lease_secs)));
    }
    reply
}

/// The header every reply shares (table 3): the client's xid, flags, giaddr and chaddr echoed,
/// `ciaddr` echoed only in an ACK, the message type and our server identifier.
fn base(config: &DhcpConfig, request: &Message, kind: MessageType) -> Message {
    let mut reply = Message::default();
    reply
        .set_opcode(Opcode::BootReply)
        .set_htype(request.htype())
        .set_xid(request.xid())
        .set_flags(request.flags())
        .set_giaddr(request.giaddr())
        .set_chaddr(request.chaddr());
    if kind == MessageType::Ack {
        reply.set_ciaddr(request.ciaddr());
    }
    let opts = reply.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(config.server_ip));
    // RFC 6842: a client identifier must be echoed, so a client can match the reply.
    if let Some(id @ DhcpOption::ClientIdentifier(_)) = request.opts().get(OptionCode::ClientIdentifier) {
        opts.insert(id.clone());
    }
    reply
}

/// The network parameters for `lease`. All of them are sent whatever the parameter request
/// list says: they are few and small, and a guest that did not ask ignores them.
fn parameters(config: &DhcpConfig, lease: &StaticLease, reply: &mut Message) {
    let opts = reply.opts_mut();
    opts.insert(DhcpOption::SubnetMask(config.subnet_mask()));
    if !config.router.is_unspecified() {
        opts.insert(DhcpOption::Router(vec![config.router]));
    }
    if !config.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(config.dns.clone()));
    }
    if !config.domain.is_empty() {
        opts.insert(DhcpOption::DomainName(config.domain.clone()));
    }
    if !lease.hostname.is_empty() {
        opts.insert(DhcpOption::Hostname(lease.hostname.clone()));
    }
    if config.mtu != 0 {
        opts.insert(DhcpOption::InterfaceMtu(config.mtu));
    }
}
