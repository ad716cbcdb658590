pub mod api;
pub mod oidc;
pub mod openssh;
pub mod sshd;
pub mod ca;
