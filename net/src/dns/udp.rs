//! The server's UDP socket with the fast path in front: each datagram the [`FastAnswers`] table
//! answers is replied to at once, in the receiving loop; every other one goes, in a task of its
//! own, to the same hickory catalog that serves TCP, through hickory's own `ResponseHandle` (which
//! sizes, truncates and encodes the reply as hickory's UDP server does).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use hickory_server::authority::{Catalog, MessageRequest};
use hickory_server::proto::op::{Header, MessageType, ResponseCode};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};
use hickory_server::proto::udp::MAX_RECEIVE_BUFFER_SIZE;
use hickory_server::proto::xfer::{
    BufDnsStreamHandle, DnsStreamHandle, Protocol, SerialMessage, StreamReceiver,
};
use hickory_server::proto::ProtoErrorKind;
use hickory_server::server::{
    Request, RequestHandler, ResponseHandle, ResponseHandler, ResponseInfo,
};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use super::fast::FastAnswers;
use super::DnsError;

/// One catalog for both the TCP listener (hickory's `ServerFuture`) and the UDP loop's
/// fallback, so both forward through the same upstream connections and cache.
#[derive(Clone)]
pub(super) struct SharedCatalog(pub Arc<Catalog>);

impl RequestHandler for SharedCatalog {
    // The signature `#[async_trait]` gives the trait's `async fn`, spelled out so no macro crate
    // is needed just to delegate.
    fn handle_request<'life0, 'life1, 'async_trait, R>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.0.handle_request(request, response_handle)
    }
}

/// Answers queries on `socket` until it fails beyond recovery, which is returned.
pub(super) async fn serve(
    socket: UdpSocket,
    fast: FastAnswers,
    catalog: SharedCatalog,
) -> DnsError {
    let socket = Arc::new(socket);
    // hickory's handles send through a channel; one task drains it onto the socket.
    let (replies, receiver) = BufDnsStreamHandle::new(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    // Dropped with this future, which aborts the tasks: stopping the server ends them.
    let mut tasks = JoinSet::new();
    tasks.spawn(send_replies(Arc::clone(&socket), receiver));
    let mut buf = vec![0u8; MAX_RECEIVE_BUFFER_SIZE];
    let mut out = Vec::with_capacity(512);
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) if unrecoverable(&e) => return DnsError::Udp(e),
            // E.g. ECONNREFUSED left by an earlier reply to a closed port.
            Err(e) => {
                tracing::debug!(error = %e, "DNS: UDP receive failed");
                continue;
            }
        };
        if !answerable(src) {
            continue;
        }
        let query = &buf[..len];
        if fast.answer(query, &mut out) {
            if let Err(e) = socket.send_to(&out, src).await {
                tracing::debug!(error = %e, %src, "DNS: UDP reply not sent");
            }
            continue;
        }
        let replies = replies.with_remote_addr(src);
        tasks.spawn(ask_hickory(catalog.clone(), query.to_vec(), src, replies));
        while tasks.try_join_next().is_some() {}
    }
}

async fn send_replies(socket: Arc<UdpSocket>, mut replies: StreamReceiver) {
    while let Some(reply) = replies.next().await {
        if let Err(e) = socket.send_to(reply.bytes(), reply.addr()).await {
            tracing::debug!(error = %e, dst = %reply.addr(), "DNS: UDP reply not sent");
        }
    }
}

/// What hickory's UDP server does with a datagram (its `handle_request` is private): responses
/// are dropped (no reflection), requests go to the catalog, unreadable ones whose header could
/// be read get a bare FORMERR header.
async fn ask_hickory(
    catalog: SharedCatalog,
    bytes: Vec<u8>,
    src: SocketAddr,
    mut replies: BufDnsStreamHandle,
) {
    match MessageRequest::read(&mut BinDecoder::new(&bytes)) {
        Ok(message) if message.message_type() == MessageType::Response => {}
        Ok(message) => {
            let request = Request::new(message, src, Protocol::Udp);
            let reply = ResponseHandle::new(src, replies, Protocol::Udp);
            catalog.handle_request(&request, reply).await;
        }
        Err(e) => {
            let ProtoErrorKind::FormError { header, .. } = e.kind() else {
                tracing::debug!(error = %e, %src, "DNS: unreadable UDP query dropped");
                return;
            };
            let mut formerr = Header::response_from_request(header);
            formerr.set_response_code(ResponseCode::FormErr);
            let sent = formerr
                .to_bytes()
                .and_then(|b| replies.send(SerialMessage::new(b, src)));
            if let Err(e) = sent {
                tracing::debug!(error = %e, %src, "DNS: FORMERR not sent");
            }
        }
    }
}

/// As hickory: no replies to port 0, nor to unspecified or broadcast sources.
fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(ip) => !ip.is_unspecified() && !ip.is_broadcast(),
            IpAddr::V6(ip) => !ip.is_unspecified(),
        }
}

/// As hickory: errors after which the socket cannot receive again.
fn unrecoverable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::ConnectionAborted
    )
}
