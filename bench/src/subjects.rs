//! A pool of fresh Ed25519 subject keys, generated before any clock starts, so every request
//! certifies a key never seen before without key generation being measured.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ssh_key::public::{Ed25519PublicKey, KeyData};
use ssh_key::PublicKey;

/// One subject key in the forms the benchmarks need.
#[derive(Clone)]
pub struct SubjectKey {
    /// The parsed public key.
    pub public_key: PublicKey,
    /// `ssh-ed25519 AAAA…`, as a client sends it.
    pub openssh: String,
}

/// `count` distinct keys from a fixed seed.
pub fn generate(count: usize, seed: u64) -> anyhow::Result<Vec<SubjectKey>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let signing_key = ed25519_dalek::SigningKey::from_bytes(&rng.gen());
        let key_data = KeyData::Ed25519(Ed25519PublicKey(signing_key.verifying_key().to_bytes()));
        let public_key = PublicKey::from(key_data);
        let openssh = public_key.to_openssh()?;
        keys.push(SubjectKey {
            public_key,
            openssh,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_parse_back() {
        let keys = generate(3, 7).unwrap();

        assert_ne!(keys[0].openssh, keys[1].openssh);
        let parsed = PublicKey::from_openssh(&keys[2].openssh).unwrap();
        assert_eq!(parsed.key_data(), keys[2].public_key.key_data());
        assert_eq!(generate(1, 7).unwrap()[0].openssh, keys[0].openssh);
    }
}
