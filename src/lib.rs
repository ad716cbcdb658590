//! jit-ca: a just-in-time SSH certificate authority.
//!
//! See the README's architecture section for how the modules fit together.

#![forbid(unsafe_code)]

pub mod krl;
