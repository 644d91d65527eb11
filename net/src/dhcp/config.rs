//! What the DHCP server hands out besides the address: netmask, router, resolvers, domain, MTU,
//! lease time, and the static lease table itself; plus the checks that catch a table that
//! could not work (duplicate MACs, addresses outside the subnet).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::lease::StaticLease;
use crate::topology::mac_string;

/// `lease_secs` value meaning "never expires" (RFC 2132 §9.2), kubevirtci's choice: guests then
/// never renew, so a paused or restored cluster keeps its addresses.
pub const INFINITE: u32 = u32::MAX;

/// The DHCP server's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The server's own address on the bridge (server identifier, option 54).
    pub server_ip: Ipv4Addr,
    /// Prefix length of the cluster subnet (sent as the subnet mask, option 1).
    pub prefix_len: u8,
    /// Default gateway (option 3); `0.0.0.0` leaves it out.
    pub router: Ipv4Addr,
    /// Resolvers (option 6); empty leaves the option out.
    pub dns: Vec<Ipv4Addr>,
    /// DNS domain of the nodes (option 15); empty leaves it out.
    pub domain: String,
    /// Interface MTU (option 26); 0 leaves it out.
    pub mtu: u16,
    /// Lease time in seconds; [`INFINITE`] (`u32::MAX`) for leases that never expire.
    pub lease_secs: u32,
    /// The MAC → address table.
    pub leases: Vec<StaticLease>,
}

/// A configuration the server could not serve correctly.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The server address is `0.0.0.0`.
    #[error("the DHCP server needs an address of its own on the bridge, not 0.0.0.0")]
    NoServerIp,
    /// Prefix length above 32.
    #[error("prefix length /{0} is not an IPv4 prefix: use 1-32")]
    BadPrefix(u8),
    /// MTU below the IPv4 minimum.
    #[error("MTU {0} is below IPv4's minimum of 68: use 68 or more, or 0 to leave it to the guest")]
    BadMtu(u16),
    /// Two leases for one MAC.
    #[error("MAC {0} has two leases: give every node its own MAC")]
    DuplicateMac(String),
    /// Two MACs sharing an address.
    #[error("address {0} is leased twice: give every node its own address")]
    DuplicateIp(Ipv4Addr),
    /// A lease the guest could not use with the server's subnet.
    #[error("lease address {ip} is outside the server's subnet {server}/{prefix}")]
    OutsideSubnet {
        /// The leased address.
        ip: Ipv4Addr,
        /// The server address.
        server: Ipv4Addr,
        /// The prefix length.
        prefix: u8,
    },
}

impl DhcpConfig {
    /// The netmask for `prefix_len` (clamped to /32 so a bad config cannot make it panic).
    pub fn subnet_mask(&self) -> Ipv4Addr {
        let prefix = u32::from(self.prefix_len.min(32));
        // checked_shl: a shift by 32 (prefix 0) is an overflow in Rust, and means "no bits".
        Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0))
    }

    /// Checks that every lease can be served: one lease per MAC and per address, all inside the
    /// server's subnet, a real server address, a sane prefix and MTU.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server_ip.is_unspecified() {
            return Err(ConfigError::NoServerIp);
        }
        if self.prefix_len == 0 || self.prefix_len > 32 {
            return Err(ConfigError::BadPrefix(self.prefix_len));
        }
        if self.mtu != 0 && self.mtu < 68 {
            return Err(ConfigError::BadMtu(self.mtu));
        }
        let mask = u32::from(self.subnet_mask());
        let network = u32::from(self.server_ip) & mask;
        let (mut macs, mut ips) = (HashSet::new(), HashSet::new());
        for lease in &self.leases {
            if !macs.insert(lease.mac) {
                return Err(ConfigError::DuplicateMac(mac_string(&lease.mac)));
            }
            if !ips.insert(lease.ip) {
                return Err(ConfigError::DuplicateIp(lease.ip));
            }
            if u32::from(lease.ip) & mask != network {
                return Err(ConfigError::OutsideSubnet {
                    ip: lease.ip,
                    server: self.server_ip,
                    prefix: self.prefix_len,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::config;
    use super::*;
    use crate::dhcp::lease::node_mac;

    #[test]
    fn masks_follow_the_prefix() {
        let mut c = config();
        assert_eq!(c.subnet_mask(), Ipv4Addr::new(255, 255, 255, 0));
        c.prefix_len = 0;
        assert_eq!(c.subnet_mask(), Ipv4Addr::UNSPECIFIED);
        c.prefix_len = 32;
        assert_eq!(c.subnet_mask(), Ipv4Addr::BROADCAST);
        c.prefix_len = 200;
        assert_eq!(c.subnet_mask(), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn the_test_config_is_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn unusable_configs_are_refused() {
        let mut c = config();
        c.server_ip = Ipv4Addr::UNSPECIFIED;
        assert_eq!(c.validate(), Err(ConfigError::NoServerIp));

        let mut c = config();
        c.prefix_len = 33;
        assert_eq!(c.validate(), Err(ConfigError::BadPrefix(33)));

        let mut c = config();
        c.mtu = 67;
        assert_eq!(c.validate(), Err(ConfigError::BadMtu(67)));

        let mut c = config();
        c.leases[1].mac = node_mac(1);
        assert_eq!(c.validate(), Err(ConfigError::DuplicateMac("52:55:00:d1:55:01".into())));

        let mut c = config();
        c.leases[1].ip = c.leases[0].ip;
        assert_eq!(c.validate(), Err(ConfigError::DuplicateIp(c.leases[0].ip)));

        let mut c = config();
        c.leases[0].ip = Ipv4Addr::new(10, 0, 0, 1);
        assert!(matches!(c.validate(), Err(ConfigError::OutsideSubnet { .. })));
    }
}
