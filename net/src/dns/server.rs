//! Runs the cluster's DNS server: the cluster zones from [`super::records`] answered
//! authoritatively, everything else forwarded to the host's resolvers, on UDP and TCP sockets
//! the caller already bound (inside the cluster's namespace, on the bridge address, port 53).
//! Over UDP the cluster's own A, AAAA and PTR records are answered by [`super::fast`] first.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::authority::{AuthorityObject, Catalog};
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::proto::xfer::Protocol;
use hickory_server::proto::ProtoError;
use hickory_server::resolver::config::{NameServerConfig, ResolveHosts, ResolverOpts};
use hickory_server::store::forwarder::{ForwardAuthority, ForwardConfig};
use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use super::fast::FastAnswers;
use super::udp::{self, SharedCatalog};
use super::{ClusterZone, DnsError};

/// A TCP client that sends nothing for this long is dropped, so idle connections cannot pile up.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-try timeout towards an upstream. Below the guests' own 5 s resolver timeout, so a dead
/// upstream is given up on (or the next one tried) before the guest retries.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// What the server answers and where it forwards the rest.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The cluster's own names.
    pub zone: ClusterZone,
    /// Resolvers for every other name, asked over UDP and, for long answers, TCP. Empty: other
    /// names are refused.
    pub upstreams: Vec<SocketAddr>,
    /// Answer the cluster's own names over UDP from a pre-encoded table before hickory. Off only
    /// to compare with hickory alone (the benchmark does).
    pub fast_path: bool,
}

/// Why [`serve`]'s wait ended.
enum Ended {
    Stop,
    Hickory(Result<(), ProtoError>),
    Udp(DnsError),
}

/// Serves DNS on `udp` and `tcp` until `stop` turns true (or its sender is dropped: an owner
/// that is gone can no longer stop the server, so it stops itself), then shuts down gracefully.
///
/// Returns an error if the zones or the forwarder cannot be built, or if the server's socket
/// tasks end without being asked to.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    config: DnsConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DnsError> {
    let catalog = SharedCatalog(Arc::new(build_catalog(&config)?));
    let mut server = ServerFuture::new(catalog.clone());
    server.register_listener(tcp, TCP_IDLE_TIMEOUT);
    let fast_udp = if config.fast_path {
        let fast = FastAnswers::new(&config.zone.zones()?)?;
        tracing::debug!(answers = fast.len(), "DNS fast path ready");
        Some(udp::serve(udp, fast, catalog))
    } else {
        server.register_socket(udp);
        None
    };
    let fast_udp_failed = async {
        match fast_udp {
            Some(serving) => serving.await,
            None => std::future::pending().await,
        }
    };
    tracing::debug!(cluster = %config.zone.cluster, upstreams = ?config.upstreams, "DNS server running");

    let ended = tokio::select! {
        ended = server.block_until_done() => Ended::Hickory(ended),
        failed = fast_udp_failed => Ended::Udp(failed),
        () = stop_requested(&mut stop) => Ended::Stop,
    };
    match ended {
        Ended::Hickory(Err(e)) => Err(DnsError::Serve(e)),
        Ended::Hickory(Ok(())) => Err(DnsError::Exited),
        Ended::Udp(e) => {
            let _ = server.shutdown_gracefully().await;
            Err(e)
        }
        Ended::Stop => server.shutdown_gracefully().await.map_err(DnsError::Serve),
    }
}

/// Resolves once `stop` holds `true` or can no longer change.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // An error only means the sender is gone, which counts as a stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The catalog [`serve`] answers from: the cluster's zones plus, with upstreams, a forwarder
/// for the root zone. Without a root zone hickory answers REFUSED for names outside the
/// cluster, at once, instead of letting clients wait for a forwarder with nowhere to go.
pub fn build_catalog(config: &DnsConfig) -> Result<Catalog, DnsError> {
    let mut catalog = Catalog::new();
    for authority in config.zone.authorities()? {
        let authority: Arc<dyn AuthorityObject> = Arc::new(authority);
        catalog.upsert(authority.origin().clone(), vec![authority]);
    }
    if !config.upstreams.is_empty() {
        let forwarder: Arc<dyn AuthorityObject> = Arc::new(forwarder(&config.upstreams)?);
        catalog.upsert(LowerName::new(&Name::root()), vec![forwarder]);
    }
    Ok(catalog)
}

fn forwarder(upstreams: &[SocketAddr]) -> Result<ForwardAuthority, DnsError> {
    let name_servers: Vec<NameServerConfig> = upstreams
        .iter()
        .flat_map(|&addr| {
            [Protocol::Udp, Protocol::Tcp].map(|protocol| NameServerConfig::new(addr, protocol))
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.timeout = UPSTREAM_TIMEOUT;
    // The guests' names are the cluster zones; the host's /etc/hosts is not theirs.
    options.use_hosts_file = ResolveHosts::Never;
    let config = ForwardConfig {
        name_servers: name_servers.into(),
        options: Some(options),
    };
    ForwardAuthority::builder_tokio(config)
        .build()
        .map_err(DnsError::Forwarder)
}

/// The `nameserver` addresses of a resolv.conf, in order, each on port 53, without duplicates.
///
/// Loopback stubs such as systemd-resolved's 127.0.0.53 are kept: the forwarder runs in the
/// host's namespace, where they answer. Lines that do not parse (IPv6 with a `%zone`, typos)
/// are skipped, as glibc does.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let addr = SocketAddr::new(ip, 53);
        if !upstreams.contains(&addr) {
            upstreams.push(addr);
        }
    }
    upstreams
}

#[cfg(test)]
mod fast_tests;
#[cfg(test)]
pub(crate) mod tests;
