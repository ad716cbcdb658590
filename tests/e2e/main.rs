//! End-to-end tests: the real binaries against a real OIDC provider, `sshd` and `ssh-keygen`.

// A failed expectation in a test is a panic with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod approvals;
mod audit;
mod flood_suite;
mod foundation;
mod oidc_provider;
mod request_suite;
mod revocation;
mod sessions;
mod sshd_support;
mod support;
mod tls_suite;
mod token_suite;
