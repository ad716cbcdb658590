//! jit-ca: a just-in-time SSH certificate authority.
//!
//! Data moves one way through the modules, and each floor uses only the ones below it:
//!
//! 1. [`jit_proto`] (its own crate): wire types shared with the client.
//! 2. Pure cores, no I/O beyond reading their own files: [`identity`] (ID tokens),
//!    [`policy`] (profiles and Cedar rules), [`signer`] (the CA key and certificates),
//!    [`krl`] (revocation lists).
//! 3. [`store`]: durable state behind one trait.
//! 4. [`service`]: the just-in-time cycle, tying cores and store together; beside it
//!    [`revocation`] (ending access early, the KRL) and [`hosts`] (enrolment, host certificates).
//! 5. Edges: [`http`] (axum routes), [`listener`] (connections and TLS), [`server`]
//!    (start-up), and the `jit-ca` binary.
//!
//! Every function that decides on time takes `now` as an argument; only the edges read the
//! clock.

#![forbid(unsafe_code)]

pub mod approvals;
pub mod audit;
pub mod config;
pub mod hosts;
pub mod http;
pub mod identity;
pub mod krl;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod revocation;
pub mod server;
pub mod service;
pub mod sessions;
pub mod signer;
pub mod store;
