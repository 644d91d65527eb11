//! The DHCPv6 protocol, pure: one client message in, at most one reply out, no sockets. Checks
//! each message as RFC 8415 §16 asks, finds the sender's node and answers with its static
//! address. Every message is guest input, so nothing here may panic: bad ones are dropped and
//! counted.

use std::net::SocketAddrV6;

use dhcproto::v6::{Message, MessageType, Status};

use super::config::{Dhcp6Config, StaticLease6};
use super::parse::{parse, Request};
use super::{ident, reply};
use crate::topology::mac_string;

/// Counters, one per kind of message handled; every call to [`Dhcp6Server::handle`] adds one
/// to exactly one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Dropped as broken: bad framing, duplicate or missing identifiers (RFC 8415 §16).
    pub malformed: u64,
    /// SOLICITs answered (ADVERTISE, or REPLY under Rapid Commit).
    pub solicits: u64,
    /// REQUESTs answered with the node's address.
    pub requests: u64,
    /// RENEWs and REBINDs answered with the node's address.
    pub renews: u64,
    /// CONFIRMs answered, Success or NotOnLink.
    pub confirms: u64,
    /// INFORMATION-REQUESTs answered.
    pub informs: u64,
    /// RELEASEs answered (leases are static, nothing is freed).
    pub releases: u64,
    /// DECLINEs answered: something else on the bridge uses a node's address.
    pub declines: u64,
    /// Well-formed messages from a client that is no node: not answered.
    pub unknown_clients: u64,
    /// Well-formed messages not answered for another reason: meant for another server,
    /// relayed, a type servers do not take, a CONFIRM naming no address.
    pub ignored: u64,
}

/// Which counter a message adds to.
#[derive(Debug, Clone, Copy)]
enum Count {
    Malformed,
    Solicit,
    Request,
    Renew,
    Confirm,
    Inform,
    Release,
    Decline,
    Unknown,
    Ignored,
}

type Verdict = Result<(Message, Count), (Count, &'static str)>;

/// The server: configuration and counters. Leases are static, so the same message always gets
/// the same answer.
#[derive(Debug)]
pub struct Dhcp6Server {
    config: Dhcp6Config,
    stats: Stats,
    book: Option<crate::leases::LeaseBook>,
}

impl Dhcp6Server {
    /// A server for `config`. It serves whatever it is given, but logs what
    /// [`Dhcp6Config::validate`] finds wrong.
    pub fn new(config: Dhcp6Config) -> Dhcp6Server {
        if let Err(e) = config.validate() {
            tracing::warn!(error = %e, "DHCPv6 configuration cannot work as intended");
        }
        Dhcp6Server { config, stats: Stats::default(), book: None }
    }

    /// Records every assigned address in `book` as well.
    pub fn with_book(mut self, book: crate::leases::LeaseBook) -> Dhcp6Server {
        self.book = Some(book);
        self
    }

    /// Its configuration.
    pub fn config(&self) -> &Dhcp6Config {
        &self.config
    }

    /// Counters of the messages handled so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Handles one UDP payload received from `src` (the client's link-local address and port)
    /// and returns the reply to send back to it, if any.
    pub fn handle(&mut self, packet: &[u8], src: SocketAddrV6) -> Option<Vec<u8>> {
        let verdict = match parse(packet) {
            Ok(req) => self.decide(&req, &src),
            Err(why) => Err((Count::Malformed, why)),
        };
        let (msg, count) = match verdict {
            Ok(answer) => answer,
            Err((count, why)) => {
                tracing::debug!(%src, len = packet.len(), why, "no DHCPv6 reply");
                self.count(count);
                return None;
            }
        };
        match reply::encode(&msg) {
            Ok(bytes) => {
                self.count(count);
                Some(bytes)
            }
            // Only our own configuration can make this fail.
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode DHCPv6 reply; check the DHCPv6 configuration");
                self.count(Count::Ignored);
                None
            }
        }
    }

    fn assigned(&self, lease: &StaticLease6, by: &'static str) {
        let (mac, ip, host) = (mac_string(&lease.mac), lease.ip6, &lease.hostname);
        tracing::info!(%mac, %ip, %host, by, "DHCPv6 address assigned");
        if let Some(book) = &self.book {
            book.took_v6(lease.mac);
        }
    }

    fn decide(&self, req: &Request, src: &SocketAddrV6) -> Verdict {
        self.check(req)?;
        let lease = ident::lookup(&self.config.leases, src.ip(), req.client_id)
            .ok_or((Count::Unknown, "client is no node: no lease for its MAC"))?;
        let c = &self.config;
        Ok(match req.kind {
            MessageType::Solicit if req.rapid_commit => {
                self.assigned(lease, "SOLICIT with Rapid Commit");
                (reply::assign(c, req, lease), Count::Solicit)
            }
            MessageType::Solicit => (reply::advertise(c, req, lease), Count::Solicit),
            MessageType::Request => {
                self.assigned(lease, "REQUEST");
                (reply::assign(c, req, lease), Count::Request)
            }
            MessageType::Renew | MessageType::Rebind if req.ia_nas.is_empty() => {
                return Err((Count::Ignored, "RENEW/REBIND without IA_NA"));
            }
            MessageType::Renew | MessageType::Rebind => (reply::renew(c, req, lease), Count::Renew),
            MessageType::Confirm => (self.confirm(req, lease)?, Count::Confirm),
            MessageType::InformationRequest => (reply::inform(c, req), Count::Inform),
            MessageType::Release => {
                tracing::info!(ip = %lease.ip6, host = %lease.hostname, "DHCPv6 address released; it stays reserved");
                (reply::status(c, req, Status::Success, "released"), Count::Release)
            }
            MessageType::Decline => {
                let (ip, host) = (lease.ip6, &lease.hostname);
                tracing::warn!(%ip, %host, "guest declined its IPv6 address: something else on the bridge uses it");
                (reply::status(c, req, Status::Success, "declined"), Count::Decline)
            }
            _ => return Err((Count::Ignored, "not a message type servers take")),
        })
    }

    /// RFC 8415 §16: which identifiers each type must, may or must not carry. A message naming
    /// another server is not broken, just not ours.
    fn check(&self, req: &Request) -> Result<(), (Count, &'static str)> {
        let ours = req.server_id.map(|id| id == self.config.server_duid.as_slice());
        let (needs_client, server_id) = match req.kind {
            MessageType::Solicit | MessageType::Confirm | MessageType::Rebind => (true, ServerId::Absent),
            MessageType::Request | MessageType::Renew | MessageType::Release | MessageType::Decline => {
                (true, ServerId::Ours)
            }
            MessageType::InformationRequest => (false, ServerId::OursIfAny),
            MessageType::RelayForw => return Err((Count::Ignored, "relayed; kvci serves its bridge directly")),
            _ => return Err((Count::Ignored, "not a message type servers take")),
        };
        if needs_client && req.client_id.is_none() {
            return Err((Count::Malformed, "no Client Identifier"));
        }
        match (server_id, ours) {
            (ServerId::Absent, Some(_)) => Err((Count::Malformed, "Server Identifier where none may be")),
            (ServerId::Ours, None) => Err((Count::Malformed, "no Server Identifier")),
            (ServerId::Ours | ServerId::OursIfAny, Some(false)) => Err((Count::Ignored, "meant for another server")),
            _ => Ok(()),
        }
    }

    /// RFC 8415 §18.3.3, narrowed to static leases: Success when every address the client
    /// names is its node's, NotOnLink otherwise; no reply when it names none.
    fn confirm(&self, req: &Request, lease: &StaticLease6) -> Result<Message, (Count, &'static str)> {
        let mut addrs = req.ia_nas.iter().flat_map(|ia| &ia.addrs).peekable();
        if addrs.peek().is_none() {
            return Err((Count::Ignored, "CONFIRM naming no address"));
        }
        Ok(if addrs.all(|a| *a == lease.ip6) {
            reply::status(&self.config, req, Status::Success, "the address is still this node's")
        } else {
            reply::status(&self.config, req, Status::NotOnLink, "not this node's address")
        })
    }

    fn count(&mut self, count: Count) {
        let s = &mut self.stats;
        let counter = match count {
            Count::Malformed => &mut s.malformed,
            Count::Solicit => &mut s.solicits,
            Count::Request => &mut s.requests,
            Count::Renew => &mut s.renews,
            Count::Confirm => &mut s.confirms,
            Count::Inform => &mut s.informs,
            Count::Release => &mut s.releases,
            Count::Decline => &mut s.declines,
            Count::Unknown => &mut s.unknown_clients,
            Count::Ignored => &mut s.ignored,
        };
        *counter += 1;
    }
}

/// What a message type says about the Server Identifier option.
#[derive(Clone, Copy)]
enum ServerId {
    Absent,
    Ours,
    OursIfAny,
}


