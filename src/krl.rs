//! OpenSSH key revocation lists (placeholder until the KRL module lands).
