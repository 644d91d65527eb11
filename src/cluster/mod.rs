//! A cluster's life: its directory ([`layout`]), saved state ([`state`]), the plan of its nodes
//! ([`plan`]), each running node ([`node`]) and clean-up after a crash ([`teardown`]).

pub mod boot;
pub mod forwards;
pub mod layout;
pub mod node;
pub mod plan;
pub mod readiness;
pub mod resume;
pub mod state;
pub mod teardown;
