pub mod api;
pub mod ca;
pub mod oidc;
pub mod openssh;
pub mod sshd;
