//! ConductorOne service-principal authentication: the client-secret format, the
//! EdDSA client assertion and the token request (conductorone.md, "Authentication").

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::PROVIDER;
use crate::saas::ConnectError;
use crate::upstream::{IssuedToken, TokenExchange, UpstreamError, oauth_token_request};

const SECRET_PREFIX: &str = "secret-token";
const SECRET_ISSUER: &str = "conductorone.com";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Assertion validity either side of now: ConductorOne rejects lifetimes of 5 min or more.
const ASSERTION_SKEW_SECS: u64 = 120;

/// The Ed25519 private key inside a ConductorOne client secret.
pub struct ClientKey(SecretBox<[u8; 32]>);

#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    crv: Option<String>,
    d: Option<String>,
}

impl ClientKey {
    /// Parses `secret-token:conductorone.com:v1:<base64url(JWK)>`. Errors say what is
    /// wrong with the format and never include any part of the secret.
    pub fn parse(secret: &SecretString) -> Result<Self, ConnectError> {
        let invalid = |problem: &str| ConnectError::SecretKeyInvalid {
            key: "clientSecret",
            problem: problem.into(),
        };
        let parts: Vec<&str> = secret.expose_secret().trim().split(':').collect();
        if parts.len() != 4 || parts[0] != SECRET_PREFIX || parts[1] != SECRET_ISSUER {
            return Err(invalid(
                "expected the format secret-token:conductorone.com:v1:<key>",
            ));
        }
        if parts[2] != "v1" {
            return Err(invalid("unsupported secret version (expected v1)"));
        }
        let json = URL_SAFE_NO_PAD
            .decode(parts[3].trim_end_matches('='))
            .map_err(|_| invalid("the key part is not base64url"))?;
        let jwk: Jwk = serde_json::from_slice(&json)
            .map_err(|_| invalid("the key part is not a JSON Web Key"))?;
        if jwk.kty.as_deref() != Some("OKP") || jwk.crv.as_deref() != Some("Ed25519") {
            return Err(invalid("the key is not an Ed25519 (OKP) key"));
        }
        let seed = jwk
            .d
            .and_then(|d| URL_SAFE_NO_PAD.decode(d.trim_end_matches('=')).ok())
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .ok_or_else(|| invalid("the key has no valid private part (d)"))?;
        Ok(Self(SecretBox::new(Box::new(seed))))
    }

    /// A compact JWS client assertion for `client_id`, audience `aud`, issued at `now`.
    pub fn assertion(&self, client_id: &str, aud: &str, now: u64) -> String {
        let nonce: [u8; 16] = rand::random();
        let header = json!({"alg": "EdDSA", "nonce": hex::encode(nonce)});
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "iat": now,
            "nbf": now - ASSERTION_SKEW_SECS,
            "exp": now + ASSERTION_SKEW_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            SigningKey::from_bytes(self.0.expose_secret()).sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// How a client secret obtains tokens.
pub enum Grant {
    /// A signed client assertion (the secret's key never leaves the operator).
    PrivateKeyJwt(ClientKey),
    /// The whole client secret in the form body.
    ClientSecret(SecretString),
}

/// `POST /auth/v1/token` with credentials in the form body (never HTTP Basic).
pub struct ClientCredentials {
    pub token_url: url::Url,
    pub client_id: String,
    pub audience: String,
    pub grant: Grant,
}

impl TokenExchange for ClientCredentials {
    fn principal(&self) -> Option<String> {
        Some(self.client_id.clone())
    }

    fn exchange<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<IssuedToken, UpstreamError>> {
        Box::pin(async move {
            match &self.grant {
                Grant::PrivateKeyJwt(key) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or_default();
                    let assertion = key.assertion(&self.client_id, &self.audience, now);
                    let form = [
                        ("grant_type", "client_credentials"),
                        ("client_id", self.client_id.as_str()),
                        ("client_assertion_type", ASSERTION_TYPE),
                        ("client_assertion", assertion.as_str()),
                    ];
                    oauth_token_request(http, PROVIDER, &self.token_url, &form, None).await
                }
                Grant::ClientSecret(secret) => {
                    let form = [
                        ("grant_type", "client_credentials"),
                        ("client_id", self.client_id.as_str()),
                        ("client_secret", secret.expose_secret()),
                    ];
                    oauth_token_request(http, PROVIDER, &self.token_url, &form, None).await
                }
            }
        })
    }
}

/// The tenant host of a client id `<name>@<host>/<suffix>`, lower-cased.
pub fn tenant_host(client_id: &str) -> Option<String> {
    let after_at = client_id.split_once('@')?.1;
    let host = after_at.split('/').next()?.trim();
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier};

    fn secret_for(seed: [u8; 32]) -> SecretString {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "d": URL_SAFE_NO_PAD.encode(seed), "x": "ignored"});
        format!(
            "secret-token:conductorone.com:v1:{}",
            URL_SAFE_NO_PAD.encode(jwk.to_string())
        )
        .into()
    }

    #[test]
    fn assertion_is_signed_with_the_documented_claims() {
        let seed = [7u8; 32];
        let key = ClientKey::parse(&secret_for(seed)).unwrap();
        let jws = key.assertion(
            "otter@acme.conductor.one/spc",
            "acme.conductor.one",
            1_000_000,
        );
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["nonce"].as_str().unwrap().len(), 32);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "otter@acme.conductor.one/spc");
        assert_eq!(claims["sub"], claims["iss"]);
        assert_eq!(claims["aud"], "acme.conductor.one");
        assert_eq!(
            (claims["nbf"].as_u64(), claims["exp"].as_u64()),
            (Some(999_880), Some(1_000_120))
        );
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let public = SigningKey::from_bytes(&seed).verifying_key();
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
        // A fresh nonce every time.
        assert_ne!(
            jws,
            key.assertion(
                "otter@acme.conductor.one/spc",
                "acme.conductor.one",
                1_000_000
            )
        );
    }

    #[test]
    fn malformed_secrets_say_what_is_wrong_without_echoing() {
        let cases = [
            ("SENTINEL-not-a-token", "expected the format"),
            (
                "secret-token:conductorone.com:v2:SENTINEL",
                "unsupported secret version",
            ),
            (
                "secret-token:conductorone.com:v1:SENTINEL!!",
                "not base64url",
            ),
            (
                "secret-token:conductorone.com:v1:U0VOVElORUw",
                "not a JSON Web Key",
            ),
        ];
        for (secret, expected) in cases {
            let message = ClientKey::parse(&SecretString::from(secret))
                .err()
                .unwrap()
                .to_string();
            assert!(message.contains(expected), "{secret}: {message}");
            assert!(!message.contains("SENTINEL"), "{message}");
        }
        let rsa = json!({"kty": "RSA", "d": "AAAA"});
        let secret = format!(
            "secret-token:conductorone.com:v1:{}",
            URL_SAFE_NO_PAD.encode(rsa.to_string())
        );
        let message = ClientKey::parse(&secret.into()).err().unwrap().to_string();
        assert!(message.contains("not an Ed25519"), "{message}");
    }

    #[test]
    fn tenant_host_comes_from_the_client_id() {
        assert_eq!(
            tenant_host("strange-hydra-68836@Acme.Conductor.One/spc").as_deref(),
            Some("acme.conductor.one")
        );
        assert_eq!(tenant_host("no-at-sign"), None);
    }
}
