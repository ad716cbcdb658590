//! JWS compact tokens signed with keys the bench generates: the ID tokens the CA verifies
//! (RS256, ES256, EdDSA) and step-ca's one-time tokens (ES256).
//!
//! RFC 7515 section 7.1: `base64url(header) . base64url(payload) . base64url(signature)`, the
//! signature taken over the first two parts as ASCII. RFC 7518 section 3.4: an ES256 signature
//! is the fixed-width `r || s`, not DER.

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rsa::pkcs1v15;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use sha2::Sha256;

/// The JWS algorithms the bench signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over a 2048-bit key.
    Rs256,
    /// ECDSA over P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

enum KeyMaterial {
    Rsa(Box<pkcs1v15::SigningKey<Sha256>>, rsa::RsaPublicKey),
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// A private signing key with its key ID.
pub struct SigningKey {
    algorithm: Algorithm,
    key_id: String,
    material: KeyMaterial,
}

impl SigningKey {
    /// Generates a key from a fixed seed, so every run signs with the same keys.
    pub fn generate(algorithm: Algorithm, seed: u64) -> anyhow::Result<SigningKey> {
        let mut rng = StdRng::seed_from_u64(seed);
        let material = match algorithm {
            Algorithm::Rs256 => {
                let private_key = rsa::RsaPrivateKey::new(&mut rng, 2048)
                    .context("generating the RSA issuer key")?;
                let public_key = private_key.to_public_key();
                KeyMaterial::Rsa(
                    Box::new(pkcs1v15::SigningKey::<Sha256>::new(private_key)),
                    public_key,
                )
            }
            Algorithm::Es256 => KeyMaterial::P256(p256::ecdsa::SigningKey::random(&mut rng)),
            Algorithm::EdDsa => KeyMaterial::Ed25519(ed25519_dalek::SigningKey::from_bytes(
                &rand::Rng::gen(&mut rng),
            )),
        };
        Ok(SigningKey {
            algorithm,
            key_id: format!("bench-{}", algorithm.name().to_lowercase()),
            material,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public half as a JWK (RFC 7517), with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> Value {
        let encode = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match &self.material {
            KeyMaterial::Rsa(_, public_key) => json!({
                "kty": "RSA",
                "n": encode(&public_key.n().to_bytes_be()),
                "e": encode(&public_key.e().to_bytes_be()),
            }),
            KeyMaterial::P256(signing_key) => {
                let point = signing_key.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": encode(point.x().map(|x| &x[..]).unwrap_or_default()),
                    "y": encode(point.y().map(|y| &y[..]).unwrap_or_default()),
                })
            }
            KeyMaterial::Ed25519(signing_key) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": encode(signing_key.verifying_key().as_bytes()),
            }),
        };
        jwk["kid"] = json!(self.key_id);
        jwk["alg"] = json!(self.algorithm.name());
        jwk["use"] = json!("sig");
        jwk
    }

    /// Checks the signature of a compact JWS with the public half only: what a verifier must
    /// compute at the least, without parsing or claim checks.
    pub fn verify_signature(&self, token: &str) -> bool {
        let Some((message, signature)) = split_signature(token) else {
            return false;
        };
        match &self.material {
            KeyMaterial::Rsa(_, public_key) => {
                let verifying_key = pkcs1v15::VerifyingKey::<Sha256>::new(public_key.clone());
                pkcs1v15::Signature::try_from(signature.as_slice())
                    .is_ok_and(|signature| verifying_key.verify(message, &signature).is_ok())
            }
            KeyMaterial::P256(signing_key) => p256::ecdsa::Signature::from_slice(&signature)
                .is_ok_and(|signature| {
                    let verifying_key = signing_key.verifying_key();
                    verifying_key.verify(message, &signature).is_ok()
                }),
            KeyMaterial::Ed25519(signing_key) => ed25519_dalek::Signature::from_slice(&signature)
                .is_ok_and(|signature| {
                    let verifying_key = signing_key.verifying_key();
                    verifying_key.verify(message, &signature).is_ok()
                }),
        }
    }

    /// [`SigningKey::verify_signature`] computed with ring instead of the RustCrypto crates.
    pub fn verify_signature_with_ring(&self, token: &str) -> bool {
        use ring::signature::{self, UnparsedPublicKey};

        let Some((message, signature)) = split_signature(token) else {
            return false;
        };
        match &self.material {
            KeyMaterial::Rsa(_, public_key) => {
                let (modulus, exponent) =
                    (public_key.n().to_bytes_be(), public_key.e().to_bytes_be());
                let components = signature::RsaPublicKeyComponents {
                    n: modulus.as_slice(),
                    e: exponent.as_slice(),
                };
                components
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, &signature)
                    .is_ok()
            }
            KeyMaterial::P256(signing_key) => {
                let point = signing_key.verifying_key().to_encoded_point(false);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point.as_bytes())
                    .verify(message, &signature)
                    .is_ok()
            }
            KeyMaterial::Ed25519(signing_key) => {
                let public_key = signing_key.verifying_key();
                UnparsedPublicKey::new(&signature::ED25519, public_key.as_bytes())
                    .verify(message, &signature)
                    .is_ok()
            }
        }
    }

    /// Signs `claims` as a compact JWS with the given `typ`.
    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        let header = json!({ "alg": self.algorithm.name(), "kid": self.key_id, "typ": typ });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match &self.material {
            KeyMaterial::Rsa(signing_key, _) => signing_key.sign(signing_input.as_bytes()).to_vec(),
            KeyMaterial::P256(signing_key) => {
                let signature: p256::ecdsa::Signature = signing_key.sign(signing_input.as_bytes());
                signature.to_bytes().to_vec()
            }
            KeyMaterial::Ed25519(signing_key) => signing_key
                .sign(signing_input.as_bytes())
                .to_bytes()
                .to_vec(),
        };
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// A compact JWS cut into what its signature covers and the decoded signature.
fn split_signature(token: &str) -> Option<(&[u8], Vec<u8>)> {
    let (signing_input, encoded) = token.rsplit_once('.')?;
    let signature = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    Some((signing_input.as_bytes(), signature))
}

/// The claims of an ID token for one bench user, valid for a day from `now`.
pub fn id_token_claims(
    issuer: &str,
    client_id: &str,
    user_index: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let issued_at = now.timestamp();
    json!({
        "iss": issuer,
        "aud": client_id,
        "sub": format!("bench-user-{user_index:03}"),
        "email": format!("user{user_index:03}@bench.example"),
        "email_verified": true,
        "groups": ["engineers"],
        "iat": issued_at,
        "auth_time": issued_at,
        "exp": issued_at + 24 * 3600,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(token: &str) -> (String, Vec<u8>) {
        let (signing_input, signature) = token.rsplit_once('.').unwrap();
        (
            signing_input.to_owned(),
            URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
    }

    #[test]
    fn es256_signature_is_raw_r_and_s_and_verifies() {
        let key = SigningKey::generate(Algorithm::Es256, 1).unwrap();

        let token = key.sign("JWT", &json!({ "sub": "x" }));

        let (signing_input, signature) = parts(&token);
        assert_eq!(signature.len(), 64);
        let KeyMaterial::P256(signing_key) = &key.material else {
            panic!("not a P-256 key");
        };
        let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
        signing_key
            .verifying_key()
            .verify(signing_input.as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn eddsa_token_verifies_and_names_its_key() {
        let key = SigningKey::generate(Algorithm::EdDsa, 2).unwrap();

        let token = key.sign("JWT", &json!({ "sub": "x" }));

        let (signing_input, signature) = parts(&token);
        let KeyMaterial::Ed25519(signing_key) = &key.material else {
            panic!("not an Ed25519 key");
        };
        let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
        signing_key
            .verifying_key()
            .verify(signing_input.as_bytes(), &signature)
            .unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], key.public_jwk()["kid"]);
        assert_eq!(header["alg"], "EdDSA");
    }

    #[test]
    fn signature_check_refuses_a_changed_payload() {
        for algorithm in [Algorithm::Es256, Algorithm::EdDsa] {
            let key = SigningKey::generate(algorithm, 3).unwrap();
            let token = key.sign("JWT", &json!({ "sub": "x" }));
            let (header, rest) = token.split_once('.').unwrap();
            let (_, signature) = rest.split_once('.').unwrap();
            let forged = format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode("{}"));

            assert!(key.verify_signature(&token), "{algorithm:?}");
            assert!(!key.verify_signature(&forged), "{algorithm:?}");
            assert!(key.verify_signature_with_ring(&token), "{algorithm:?}");
            assert!(!key.verify_signature_with_ring(&forged), "{algorithm:?}");
        }
    }
}
