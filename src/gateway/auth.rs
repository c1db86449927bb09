//! Bearer tokens: the SHA-256 of the presented token is compared (in constant time, with
//! every configured hash) against `auth.tokens[].token_sha256` and `auth.admin_token_sha256`.
//! Tokens themselves are never stored, logged or echoed.
//!
//! [`Auth::principal`] answers "who is this" (401 when nobody) and [`Principal::may_read`]
//! "may they read this org" (403 for another org's token); REST handlers get both through
//! the [`super::OrgAccess`] extractor, and a WebSocket upgrade can call them with `?token=`.

use super::error::ApiError;
use crate::config::{parse_sha256_hex, AuthConfig};
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Who a request speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The admin token: every org.
    Admin,
    /// A per-org token.
    Org(Uuid),
    /// `auth.enabled = false`: everyone may read everything.
    Anonymous,
}

impl Principal {
    /// 403 unless this principal may read `org`.
    pub fn may_read(&self, org: Uuid) -> Result<(), ApiError> {
        match self {
            Principal::Admin | Principal::Anonymous => Ok(()),
            Principal::Org(own) if *own == org => Ok(()),
            Principal::Org(_) => Err(ApiError::forbidden(format!(
                "this token may not read org {org}"
            ))),
        }
    }
}

/// The configured token hashes.
#[derive(Debug, Clone)]
pub struct Auth {
    enabled: bool,
    admin: Option<[u8; 32]>,
    tokens: Vec<([u8; 32], Uuid)>,
}

/// SHA-256 of a token, as the config stores it (lowercase hex).
pub fn token_sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal in time independent of where the bytes differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

impl Auth {
    /// From `[auth]`. Hashes that are not 64 hex chars are skipped (`Config::validate`
    /// already rejects them).
    pub fn new(cfg: &AuthConfig) -> Auth {
        Auth {
            enabled: cfg.enabled,
            admin: cfg.admin_token_sha256.as_deref().and_then(parse_sha256_hex),
            tokens: cfg
                .tokens
                .iter()
                .filter_map(|t| t.sha256_bytes().map(|h| (h, t.org_id)))
                .collect(),
        }
    }

    /// Whether a configured token names `org`.
    pub fn names_org(&self, org: Uuid) -> bool {
        self.tokens.iter().any(|(_, o)| *o == org)
    }

    /// The principal of a raw token (e.g. a WebSocket's `?token=`); 401 if it matches no
    /// configured hash.
    pub fn principal_of_token(&self, token: Option<&str>) -> Result<Principal, ApiError> {
        if !self.enabled {
            return Ok(Principal::Anonymous);
        }
        let token = match token {
            Some(t) if !t.is_empty() => t,
            _ => return Err(ApiError::unauthorized("a token is required")),
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every hash, without stopping at a match.
        let mut found = None;
        for (hash, org) in &self.tokens {
            if ct_eq(hash, &digest) && found.is_none() {
                found = Some(Principal::Org(*org));
            }
        }
        if let Some(admin) = &self.admin {
            if ct_eq(admin, &digest) {
                found = Some(Principal::Admin);
            }
        }
        found.ok_or_else(|| ApiError::unauthorized("the token is not valid"))
    }

    /// The principal of a request's `Authorization: Bearer <token>` header.
    pub fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if !self.enabled {
            return Ok(Principal::Anonymous);
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing Authorization: Bearer <token> header",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not 'Bearer <token>'")
            })?;
        self.principal_of_token(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthToken;

    fn auth() -> (Auth, Uuid) {
        let org = Uuid::from_u128(7);
        let cfg = AuthConfig {
            enabled: true,
            admin_token_sha256: Some(token_sha256_hex("root")),
            tokens: vec![AuthToken {
                org_id: org,
                token_sha256: token_sha256_hex("t1").to_uppercase(),
                name: None,
            }],
        };
        (Auth::new(&cfg), org)
    }

    #[test]
    fn tokens_map_to_principals() {
        let (a, org) = auth();
        assert_eq!(
            a.principal_of_token(Some("t1")).unwrap(),
            Principal::Org(org)
        );
        assert_eq!(
            a.principal_of_token(Some("root")).unwrap(),
            Principal::Admin
        );
        assert_eq!(a.principal_of_token(Some("t2")).unwrap_err().status, 401);
        assert_eq!(a.principal_of_token(None).unwrap_err().status, 401);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer t1".parse().unwrap());
        assert_eq!(a.principal(&h).unwrap(), Principal::Org(org));
        h.insert(header::AUTHORIZATION, "Basic t1".parse().unwrap());
        assert_eq!(a.principal(&h).unwrap_err().status, 401);
        assert!(Principal::Org(org).may_read(org).is_ok());
        assert_eq!(
            Principal::Org(org)
                .may_read(Uuid::from_u128(8))
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn sha256_matches_the_known_vector() {
        assert_eq!(
            token_sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
