//! Provisioning: building provider images ([`build`]) by running their phases in a real guest,
//! and running their up hooks on a fresh cluster ([`hooks`]).

pub mod build;
pub mod hooks;
pub mod kubeconfig;
pub mod output;
