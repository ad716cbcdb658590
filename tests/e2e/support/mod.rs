//! Real components for the end-to-end tests and the demo (`examples/demo.rs`), which each use
//! a part of it.

#![allow(dead_code)]

pub mod api;
pub mod ca;
pub mod host;
pub mod oidc;
pub mod openssh;
pub mod sshd;
