//! Which nodes took their static leases, as kvci's DHCP and DHCPv6 servers saw it: what the
//! supervisor waits on (an event, not a poll) for guests that have no readiness beacon.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

/// MACs that were acknowledged a lease, per protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    /// Acknowledged by the DHCPv4 server.
    pub v4: BTreeSet<[u8; 6]>,
    /// Assigned their address by the DHCPv6 server.
    pub v6: BTreeSet<[u8; 6]>,
}

/// The servers' side: records a lease and wakes the waiters when it is new.
#[derive(Debug, Clone, Default)]
pub struct LeaseBook(Arc<watch::Sender<Taken>>);

impl LeaseBook {
    /// A new, empty book.
    pub fn new() -> LeaseBook {
        LeaseBook(Arc::new(watch::channel(Taken::default()).0))
    }

    /// `mac` took its IPv4 lease.
    pub fn took_v4(&self, mac: [u8; 6]) {
        self.0.send_if_modified(|t| t.v4.insert(mac));
    }

    /// `mac` took its IPv6 address.
    pub fn took_v6(&self, mac: [u8; 6]) {
        self.0.send_if_modified(|t| t.v6.insert(mac));
    }

    /// A receiver to wait on.
    pub fn watch(&self) -> watch::Receiver<Taken> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_lease_wakes_the_waiter_and_a_repeat_does_not() {
        let book = LeaseBook::new();
        let mut rx = book.watch();
        book.took_v4([1; 6]);
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().v4.contains(&[1; 6]));
        book.took_v4([1; 6]);
        assert!(!rx.has_changed().unwrap(), "a renewal of the same lease is no news");
        book.took_v6([1; 6]);
        rx.changed().await.unwrap();
        assert!(rx.borrow().v6.contains(&[1; 6]));
    }
}
