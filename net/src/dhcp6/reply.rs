//! What a reply contains (RFC 8415 §18.3), built with dhcproto's v6 types: Server and Client
//! Identifier always, the node's address in the first IA_NA, resolvers and search domain.
//!
//! Resolvers and the search domain go into every ADVERTISE and REPLY that configures, asked for
//! in the Option Request option or not: they are a few dozen bytes, RFC 8415 §18.3 lets a
//! server add options nobody asked for, clients ignore what they did not ask for, and a client
//! with a short request list would otherwise be left without a resolver.

use dhcproto::v6::{DhcpOption, DhcpOptions, EncodeError, Encodable, IAAddr, Message, MessageType, Status, StatusCode, IANA};
use dhcproto::Name;

use super::config::{Dhcp6Config, StaticLease6, INFINITE};
use super::parse::Request;

/// ADVERTISE answering a SOLICIT. Preference 255 makes the client request at once instead of
/// waiting a second for other servers (RFC 8415 §18.2.1); there are none on a cluster bridge.
pub(super) fn advertise(config: &Dhcp6Config, req: &Request, lease: &StaticLease6) -> Message {
    let mut msg = configuring(config, req, MessageType::Advertise, lease, false);
    msg.opts_mut().insert(DhcpOption::Preference(255));
    msg
}

/// REPLY assigning the node's address: to a REQUEST, or to a SOLICIT with Rapid Commit (which
/// the reply then carries too, RFC 8415 §18.3.1).
pub(super) fn assign(config: &Dhcp6Config, req: &Request, lease: &StaticLease6) -> Message {
    let mut msg = configuring(config, req, MessageType::Reply, lease, false);
    if req.kind == MessageType::Solicit {
        msg.opts_mut().insert(DhcpOption::RapidCommit);
    }
    msg
}

/// REPLY to RENEW or REBIND: the node's address again, and every other address the client
/// named with lifetimes 0, so it drops them (RFC 8415 §18.3.4).
pub(super) fn renew(config: &Dhcp6Config, req: &Request, lease: &StaticLease6) -> Message {
    configuring(config, req, MessageType::Reply, lease, true)
}

/// REPLY to INFORMATION-REQUEST: resolvers and search domain only.
pub(super) fn inform(config: &Dhcp6Config, req: &Request) -> Message {
    let mut msg = base(config, req, MessageType::Reply);
    parameters(config, msg.opts_mut());
    msg
}

/// REPLY carrying only a top-level status: CONFIRM's verdict, RELEASE and DECLINE's Success.
pub(super) fn status(config: &Dhcp6Config, req: &Request, status: Status, why: &str) -> Message {
    let mut msg = base(config, req, MessageType::Reply);
    msg.opts_mut().insert(status_code(status, why));
    msg
}

/// The wire bytes of `msg`.
pub(super) fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    msg.to_vec()
}

/// T1 and T2 for `lifetime`: never renew when it never ends, else RFC 8415 §21.4's
/// recommended 0.5 and 0.8 of the preferred lifetime.
pub(super) fn renewal_times(lifetime: u32) -> (u32, u32) {
    if lifetime == INFINITE {
        return (INFINITE, INFINITE);
    }
    let t2 = u64::from(lifetime) * 4 / 5;
    (lifetime / 2, u32::try_from(t2).unwrap_or(lifetime))
}

/// ADVERTISE or REPLY with the address in the client's first IA_NA. One node has one address,
/// so further IA_NAs get NoAddrsAvail; a message with no IA_NA gets it as a top-level status.
fn configuring(config: &Dhcp6Config, req: &Request, kind: MessageType, lease: &StaticLease6, renewing: bool) -> Message {
    let mut msg = base(config, req, kind);
    let opts = msg.opts_mut();
    if req.ia_nas.is_empty() {
        opts.insert(status_code(Status::NoAddrsAvail, "no IA_NA asked for an address"));
    }
    let (t1, t2) = renewal_times(config.lifetime);
    for (i, ia) in req.ia_nas.iter().enumerate() {
        let mut inner = DhcpOptions::new();
        if i == 0 {
            inner.insert(address(lease.ip6, config.lifetime));
            if renewing {
                ia.addrs.iter().filter(|a| **a != lease.ip6).for_each(|a| inner.insert(address(*a, 0)));
            }
            opts.insert(DhcpOption::IANA(IANA { id: ia.id, t1, t2, opts: inner }));
        } else {
            inner.insert(status_code(Status::NoAddrsAvail, "one address per node, given in the first IA_NA"));
            opts.insert(DhcpOption::IANA(IANA { id: ia.id, t1: 0, t2: 0, opts: inner }));
        }
    }
    parameters(config, opts);
    msg
}

/// Every reply: message type, the client's transaction id, our DUID, the client's echoed.
fn base(config: &Dhcp6Config, req: &Request, kind: MessageType) -> Message {
    let mut msg = Message::new_with_id(kind, req.xid);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::ServerId(config.server_duid.clone()));
    if let Some(id) = req.client_id {
        opts.insert(DhcpOption::ClientId(id.to_vec()));
    }
    msg
}

fn parameters(config: &Dhcp6Config, opts: &mut DhcpOptions) {
    if !config.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServers(config.dns.clone()));
    }
    // One name, so dhcproto's encoder has nothing to compress (RFC 8415 §10 forbids it).
    let name = Some(&config.domain).filter(|d| !d.is_empty()).and_then(|d| Name::from_ascii(d).ok());
    if let Some(name) = name {
        opts.insert(DhcpOption::DomainSearchList(vec![name]));
    }
}

fn address(addr: std::net::Ipv6Addr, lifetime: u32) -> DhcpOption {
    DhcpOption::IAAddr(IAAddr { addr, preferred_life: lifetime, valid_life: lifetime, opts: DhcpOptions::new() })
}

fn status_code(status: Status, why: &str) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode { status, msg: why.to_string() })
}
