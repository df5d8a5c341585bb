//! Join tokens: the proof a proxy presents in local mode.
//!
//! A token is `weft1.<claims>.<mac>`: base64url JSON claims (mesh,
//! namespace, service account, expiry) and an HMAC-SHA256 over them with a
//! key only the control plane (and `weftctl token create` on its state
//! directory) holds. A token scopes a proxy to one identity of one mesh.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "weft1";

/// What a token vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub mesh: String,
    #[serde(rename = "ns")]
    pub namespace: String,
    #[serde(rename = "sa")]
    pub service_account: String,
    /// Seconds since the Unix epoch after which the token is refused.
    #[serde(rename = "exp")]
    pub expires_unix: i64,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature is not valid (forged, or made with another control plane's key)")]
    BadSignature,
    #[error("the token expired at {expired_unix} (now {now_unix})")]
    Expired { expired_unix: i64, now_unix: i64 },
}

/// The secret that signs join tokens.
pub struct TokenKey {
    raw: Vec<u8>,
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A new random key.
    pub fn generate() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let mut raw = vec![0u8; 32];
        // SystemRandom fails only when the OS has no randomness at all.
        ring::rand::SecureRandom::fill(&rng, &mut raw).expect("the operating system's random source");
        Self::from_bytes(&raw)
    }

    pub fn from_bytes(raw: &[u8]) -> Self {
        TokenKey { raw: raw.to_vec(), key: hmac::Key::new(hmac::HMAC_SHA256, raw) }
    }

    /// The key's bytes, for the state directory only.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    pub fn issue(&self, claims: &Claims) -> String {
        // Claims are plain strings and integers: serialising cannot fail.
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signed = format!("{PREFIX}.{body}");
        let mac = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, signed.as_bytes()).as_ref());
        format!("{signed}.{mac}")
    }

    /// The token's claims when its MAC is good and it has not expired.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Claims, TokenError> {
        let (signed, mac) = token.trim().rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (prefix, body) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if prefix != PREFIX {
            return Err(TokenError::Malformed);
        }
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, signed.as_bytes(), &mac).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.expires_unix <= now_unix {
            return Err(TokenError::Expired { expired_unix: claims.expires_unix, now_unix });
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims { mesh: "default".into(), namespace: "shop".into(), service_account: "cart".into(), expires_unix: 2_000 }
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let key = TokenKey::generate();
        let token = key.issue(&claims());
        assert_eq!(key.verify(&token, 1_999), Ok(claims()));
        assert_eq!(key.verify(&token, 2_000), Err(TokenError::Expired { expired_unix: 2_000, now_unix: 2_000 }));
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let key = TokenKey::generate();
        let token = key.issue(&claims());
        // Another control plane's key.
        assert_eq!(TokenKey::generate().verify(&token, 0), Err(TokenError::BadSignature));
        // Claims edited after signing: a longer expiry, another namespace.
        let (signed, mac) = token.rsplit_once('.').unwrap();
        let mut edited = claims();
        edited.namespace = "admin".into();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&edited).unwrap());
        let forged = format!("{PREFIX}.{body}.{mac}");
        assert_ne!(forged, token);
        assert_eq!(key.verify(&forged, 0), Err(TokenError::BadSignature));
        assert_eq!(key.verify(signed, 0), Err(TokenError::Malformed));
        assert_eq!(key.verify("", 0), Err(TokenError::Malformed));
        assert_eq!(key.verify(&format!("weft2.{body}.{mac}"), 0), Err(TokenError::Malformed));
    }
}
