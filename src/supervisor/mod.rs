//! The supervisor: the background process that owns one cluster's QEMU processes, answers
//! `status`/`down` on a control socket ([`protocol`], [`server`], [`client`]) and is started
//! detached by `vm up` ([`spawn`]).

pub mod client;
pub mod freeze;
mod node_task;
pub mod protocol;
pub mod server;
pub mod spawn;
