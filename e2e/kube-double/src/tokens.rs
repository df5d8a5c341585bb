//! ServiceAccount tokens: issued as JWTs (HS256 with a random per-server
//! key) and checked by TokenReview, as the API server's service-account
//! authenticator does (issuer, expiry, audiences, the ServiceAccount and
//! the bound Pod still existing with the same uid).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

#[derive(Debug)]
pub struct Issuer {
    key: hmac::Key,
    pub default_audience: String,
}

/// The claims of a valid token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub namespace: String,
    pub service_account: String,
    pub sa_uid: String,
    pub pod: Option<(String, String)>,
    pub audiences: Vec<String>,
    pub exp: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

impl Issuer {
    pub fn new(default_audience: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system randomness");
        Issuer { key, default_audience: default_audience.to_string() }
    }

    /// Signs a token. `audiences` empty means the API server's own audience.
    pub fn issue(
        &self,
        namespace: &str,
        sa: &str,
        sa_uid: &str,
        audiences: &[String],
        expiration: Duration,
        pod: Option<(&str, &str)>,
    ) -> (String, u64) {
        let now = secs(SystemTime::now());
        let exp = now + expiration.as_secs().max(1);
        let aud: Vec<String> =
            if audiences.is_empty() { vec![self.default_audience.clone()] } else { audiences.to_vec() };
        let mut k8s = json!({"namespace": namespace, "serviceaccount": {"name": sa, "uid": sa_uid}});
        if let Some((name, uid)) = pod {
            k8s["pod"] = json!({"name": name, "uid": uid});
        }
        let claims = json!({
            "iss": ISSUER, "sub": format!("system:serviceaccount:{namespace}:{sa}"), "aud": aud,
            "exp": exp, "iat": now, "nbf": now, "jti": crate::util::new_uid(), "kubernetes.io": k8s,
        });
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "kube-double"});
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        (format!("{signing_input}.{}", B64.encode(sig.as_ref())), exp)
    }

    /// Checks signature, issuer and expiry; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("invalid bearer token".to_string());
        };
        let sig = B64.decode(s).map_err(|_| "invalid bearer token".to_string())?;
        hmac::verify(&self.key, format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| "invalid bearer token, square/go-jose: error in cryptographic primitive".to_string())?;
        let claims: Value = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| "invalid bearer token".to_string())?;
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return Err("invalid bearer token".to_string());
        }
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if secs(SystemTime::now()) >= exp {
            return Err("invalid bearer token, service account token has expired".to_string());
        }
        let k = claims.get("kubernetes.io").cloned().unwrap_or(Value::Null);
        let s = |p: &str| k.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        let pod = k.get("pod").map(|_| (s("/pod/name"), s("/pod/uid")));
        let audiences = claims
            .get("aud")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Ok(Claims {
            namespace: s("/namespace"),
            service_account: s("/serviceaccount/name"),
            sa_uid: s("/serviceaccount/uid"),
            pod,
            audiences,
            exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let i = Issuer::new("https://kubernetes.default.svc");
        let (t, _) = i.issue("ns", "sa", "u1", &["a".into()], Duration::from_secs(600), Some(("p", "pu")));
        let c = i.verify(&t).unwrap();
        assert_eq!(c.service_account, "sa");
        assert_eq!(c.pod, Some(("p".into(), "pu".into())));
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(i.verify(&forged).is_err());
        let other = Issuer::new("x");
        assert!(other.verify(&t).is_err());
    }
}
