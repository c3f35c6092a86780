//! The admin API's bearer tokens: `ADMIN_TOKEN`, several while rotating, compared in
//! constant time.
//!
//! Tokens are compared as SHA-256 digests, so the comparison takes the same time whatever
//! the presented token's length and whichever configured token (if any) it matches: every
//! digest is compared, with no early exit.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AdminToken;

/// The configured tokens, as digests. Empty: the admin API is off (404).
#[derive(Clone, Default)]
pub struct AdminTokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminTokens({} configured)", self.digests.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl AdminTokens {
    pub fn new(tokens: &[AdminToken]) -> Self {
        Self {
            digests: tokens
                .iter()
                .map(|t| digest(t.expose().as_bytes()))
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether the `Authorization` header value is `Bearer <a configured token>`.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let presented = digest(token);
        let mut matched = subtle::Choice::from(0);
        for known in &self.digests {
            matched |= known.ct_eq(&presented);
        }
        bool::from(matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_token_is_accepted_and_nothing_else() {
        let tokens = AdminTokens::new(&[
            AdminToken::new("old-token".into()),
            AdminToken::new("new-token".into()),
        ]);
        assert!(tokens.accepts(Some(b"Bearer old-token")));
        assert!(tokens.accepts(Some(b"Bearer new-token")));
        for wrong in [
            &b"Bearer other"[..],
            b"Bearer old-token ",
            b"bearer old-token",
            b"old-token",
            b"Bearer ",
        ] {
            assert!(!tokens.accepts(Some(wrong)), "{wrong:?}");
        }
        assert!(!tokens.accepts(None));
        assert!(!AdminTokens::new(&[]).accepts(Some(b"Bearer ")));
    }
}
