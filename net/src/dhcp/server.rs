//! The DHCP protocol, pure: one client packet in, at most one reply out, no sockets. Decides
//! which packets are answered (RFC 2131 §4.3) and keeps the counters. Every packet is guest
//! input, so nothing here may panic: bad packets are dropped and counted.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};

use super::config::DhcpConfig;
use super::lease::{self, StaticLease};
use super::parse::{parse, requested_ip, Request};
use super::reply;
use crate::topology::mac_string;

/// Counters, one per kind of packet handled; every call to [`DhcpServer::handle`] adds one to
/// exactly one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Dropped as not a DHCP client message: undecodable, not a BOOTREQUEST, not Ethernet,
    /// no magic cookie or no message type.
    pub malformed: u64,
    /// DISCOVERs answered with an OFFER.
    pub offers: u64,
    /// REQUESTs answered with an ACK.
    pub acks: u64,
    /// REQUESTs refused with a NAK.
    pub naks: u64,
    /// RELEASEs from known clients (leases are static, so nothing is freed).
    pub releases: u64,
    /// DECLINEs from known clients: something else on the bridge uses a node's address.
    pub declines: u64,
    /// INFORMs answered with an ACK.
    pub informs: u64,
    /// Well-formed packets not answered: unknown MAC, another server's, relayed, or a type a
    /// server does not take.
    pub ignored: u64,
}

/// Where a reply goes, per RFC 2131 §4.1; the client port (68) is the socket side's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTo {
    /// To 255.255.255.255: the client has no address yet, or it is a NAK.
    Broadcast,
    /// To the client's own address (`ciaddr`), which it already uses.
    Unicast(Ipv4Addr),
}

/// What to do about one received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send `bytes` (an encoded reply) to `to`.
    Reply {
        /// The encoded DHCP message.
        bytes: Vec<u8>,
        /// Its destination.
        to: ReplyTo,
    },
    /// Send nothing, for the reason given (for logs and tests).
    Ignore(&'static str),
}

/// The server: configuration and counters. Leases are static, so there is no other state, and
/// the same packet always gets the same answer.
#[derive(Debug)]
pub struct DhcpServer {
    config: DhcpConfig,
    stats: Stats,
    book: Option<crate::leases::LeaseBook>,
}

/// Which counter an answered packet adds to.
#[derive(Clone, Copy)]
enum Answered {
    Offer,
    Ack,
    Nak,
    Inform,
}

impl DhcpServer {
    /// A server for `config`. It serves whatever it is given, but logs what
    /// [`DhcpConfig::validate`] finds wrong, since a guest without an address is hard to debug.
    pub fn new(config: DhcpConfig) -> DhcpServer {
        if let Err(e) = config.validate() {
            tracing::warn!(error = %e, "DHCP configuration cannot work as intended");
        }
        DhcpServer { config, stats: Stats::default(), book: None }
    }

    /// Records every acknowledged lease in `book` as well.
    pub fn with_book(mut self, book: crate::leases::LeaseBook) -> DhcpServer {
        self.book = Some(book);
        self
    }

    /// Its configuration.
    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// Counters of the packets handled so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Handles one received UDP payload and says what to send back, if anything.
    pub fn handle(&mut self, packet: &[u8]) -> Outcome {
        let request = match parse(packet) {
            Ok(request) => request,
            Err(why) => {
                self.stats.malformed += 1;
                tracing::debug!(len = packet.len(), why, "dropped malformed DHCP packet");
                return Outcome::Ignore(why);
            }
        };
        // Guests sit on our own bridge; a relay agent there would mean a foreign network.
        if !request.msg.giaddr().is_unspecified() {
            return self.ignore(&request, "relayed packet; kvci serves its bridge directly");
        }
        match request.kind {
            MessageType::Discover => self.discover(&request),
            MessageType::Request => self.request(&request),
            MessageType::Release => self.release(&request),
            MessageType::Decline => self.decline(&request),
            MessageType::Inform => self.inform(&request),
            _ => self.ignore(&request, "not a message type a server takes"),
        }
    }

    fn discover(&mut self, req: &Request) -> Outcome {
        let Some(lease) = lease::lookup(&self.config.leases, &req.mac) else {
            return self.ignore(req, "DISCOVER from a MAC without a lease");
        };
        let offer = reply::offer(&self.config, &req.msg, lease);
        self.answer(req, &offer, Answered::Offer)
    }

    /// §4.3.2: SELECTING (server id + requested IP), INIT-REBOOT (requested IP only) or
    /// RENEWING/REBINDING (ciaddr only). All three come down to "is this the client's lease".
    fn request(&mut self, req: &Request) -> Outcome {
        if self.for_another_server(req) {
            return self.ignore(req, "REQUEST for another server's offer");
        }
        let Some(lease) = lease::lookup(&self.config.leases, &req.mac) else {
            return self.nak(req, "no lease for this MAC");
        };
        match requested_ip(&req.msg) {
            Some(ip) if ip == lease.ip => {
                let (mac, ip, host) = (mac_string(&req.mac), lease.ip, &lease.hostname);
                tracing::info!(%mac, %ip, %host, "DHCP lease acknowledged");
                if let Some(book) = &self.book {
                    book.took_v4(req.mac);
                }
                let ack = reply::ack(&self.config, &req.msg, lease);
                self.answer(req, &ack, Answered::Ack)
            }
            Some(_) => self.nak(req, "requested address is not this MAC's lease"),
            None => self.nak(req, "REQUEST names no address"),
        }
    }

    fn release(&mut self, req: &Request) -> Outcome {
        let Some(lease) = self.known_client(req) else {
            return self.ignore(req, "RELEASE not for this server's lease");
        };
        let (ip, host) = (lease.ip, &lease.hostname);
        tracing::info!(%ip, %host, "DHCP lease released; it stays reserved for this MAC");
        self.stats.releases += 1;
        Outcome::Ignore("RELEASE needs no reply")
    }

    fn decline(&mut self, req: &Request) -> Outcome {
        let Some(lease) = self.known_client(req) else {
            return self.ignore(req, "DECLINE not for this server's lease");
        };
        let (ip, host) = (lease.ip, &lease.hostname);
        tracing::warn!(%ip, %host, "guest declined its address: something else on the bridge uses it");
        self.stats.declines += 1;
        Outcome::Ignore("DECLINE needs no reply")
    }

    fn inform(&mut self, req: &Request) -> Outcome {
        let Some(lease) = lease::lookup(&self.config.leases, &req.mac) else {
            return self.ignore(req, "INFORM from a MAC without a lease");
        };
        let ack = reply::inform_ack(&self.config, &req.msg, lease);
        self.answer(req, &ack, Answered::Inform)
    }

    /// The lease of a RELEASE/DECLINE sender, unless the message names another server.
    fn known_client(&self, req: &Request) -> Option<&StaticLease> {
        if self.for_another_server(req) {
            return None;
        }
        lease::lookup(&self.config.leases, &req.mac)
    }

    fn for_another_server(&self, req: &Request) -> bool {
        matches!(req.msg.opts().get(OptionCode::ServerIdentifier),
            Some(DhcpOption::ServerIdentifier(id)) if *id != self.config.server_ip)
    }

    fn nak(&mut self, req: &Request, why: &'static str) -> Outcome {
        tracing::info!(mac = %mac_string(&req.mac), why, "DHCP request refused");
        let nak = reply::nak(&self.config, &req.msg, why);
        self.answer(req, &nak, Answered::Nak)
    }

    fn answer(&mut self, req: &Request, reply: &Message, answered: Answered) -> Outcome {
        let bytes = match reply::encode(reply) {
            Ok(bytes) => bytes,
            // Only our own configuration can make this fail (e.g. an absurd hostname).
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode DHCP reply; check the DHCP configuration");
                self.stats.ignored += 1;
                return Outcome::Ignore("cannot encode the reply");
            }
        };
        let kind = match answered {
            Answered::Offer => {
                self.stats.offers += 1;
                MessageType::Offer
            }
            Answered::Ack => {
                self.stats.acks += 1;
                MessageType::Ack
            }
            Answered::Nak => {
                self.stats.naks += 1;
                MessageType::Nak
            }
            Answered::Inform => {
                self.stats.informs += 1;
                MessageType::Ack
            }
        };
        Outcome::Reply { bytes, to: reply::destination(&req.msg, kind) }
    }

    fn ignore(&mut self, req: &Request, why: &'static str) -> Outcome {
        tracing::debug!(mac = %mac_string(&req.mac), kind = ?req.kind, why, "DHCP packet ignored");
        self.stats.ignored += 1;
        Outcome::Ignore(why)
    }
}
