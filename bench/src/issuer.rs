//! A minimal OpenID Connect issuer on loopback: the discovery document and the JWKS, nothing
//! else. The CA fetches both at start, exactly as it does from a real provider, so the tokens
//! the load sends go through its real verification path.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::tokens::SigningKey;

/// The running issuer.
pub struct Issuer {
    /// `http://127.0.0.1:PORT`, the `iss` of every token.
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Issuer {
    /// Serves discovery and a JWKS holding the public halves of `keys`.
    pub async fn start(keys: &[SigningKey]) -> anyhow::Result<Issuer> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the issuer")?;
        let url = format!("http://{}", listener.local_addr()?);

        // OpenID Connect Discovery 1.0 section 3: the fields a provider must publish.
        let algorithms: Vec<&str> = keys.iter().map(|key| key.algorithm().name()).collect();
        let discovery = Arc::new(json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algorithms,
        }));
        let jwks = Arc::new(json!({
            "keys": keys.iter().map(SigningKey::public_jwk).collect::<Vec<Value>>(),
        }));

        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let discovery = Arc::clone(&discovery);
                    async move { Json((*discovery).clone()) }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    let jwks = Arc::clone(&jwks);
                    async move { Json((*jwks).clone()) }
                }),
            );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Issuer { url, server })
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
