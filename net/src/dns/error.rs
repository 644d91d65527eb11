//! What can go wrong building or running the cluster's DNS server.

use hickory_server::proto::ProtoError;

/// The DNS server could not be set up, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A cluster or host name is not usable as a DNS name.
    #[error("{name:?} cannot be a DNS name: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// hickory refused a record while building a zone.
    #[error("record {record} could not be added to zone {zone}")]
    Record {
        /// The zone's origin.
        zone: String,
        /// The record's owner name.
        record: String,
    },
    /// The forwarder to the upstream resolvers could not be built.
    #[error("cannot set up forwarding to the upstream DNS servers: {0}")]
    Forwarder(String),
    /// A socket task of the server failed.
    #[error("DNS server failed")]
    Serve(#[source] ProtoError),
    /// The UDP socket failed beyond recovery.
    #[error("DNS server's UDP socket failed")]
    Udp(#[source] std::io::Error),
    /// All socket tasks ended although no stop was asked for.
    #[error("DNS server stopped on its own")]
    Exited,
}
