//! HTTP basic authentication and per-user permissions, as HiveMQ's REST API RBAC does them.

use std::collections::HashMap;
use std::sync::Mutex;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every endpoint.
    Full,
    /// List, get and download; creating and restoring answer 403.
    ReadOnly,
    /// Authenticated, but every endpoint answers 403.
    Denied,
}

/// The operations the endpoints perform, for permission checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    List,
    Get,
    Create,
    Restore,
    Download,
}

impl Access {
    pub(crate) fn allows(self, op: Operation) -> bool {
        match self {
            Access::Full => true,
            Access::ReadOnly => {
                matches!(op, Operation::List | Operation::Get | Operation::Download)
            }
            Access::Denied => false,
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `Authorization` header value for HTTP basic authentication.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// The configured users, keyed by their encoded credentials: comparing encodings avoids
/// decoding untrusted input, and base64 with padding is canonical.
#[derive(Debug, Default)]
pub(crate) struct Users {
    by_credentials: Mutex<HashMap<String, Access>>,
}

impl Users {
    pub fn add(&self, user: &str, password: &str, access: Access) {
        let key = base64(format!("{user}:{password}").as_bytes());
        self.by_credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, access);
    }

    /// The access of the request's credentials; `None` means 401. With no users configured the
    /// API is open, as HiveMQ's is without an RBAC extension.
    pub fn check(&self, authorization: Option<&str>) -> Option<Access> {
        let users = self
            .by_credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if users.is_empty() {
            return Some(Access::Full);
        }
        let (scheme, credentials) = authorization?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        users.get(credentials.trim()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn users_are_checked_by_credentials() {
        let users = Users::default();
        assert_eq!(users.check(None), Some(Access::Full));
        users.add("admin", "pw", Access::Full);
        users.add("viewer", "pw", Access::ReadOnly);
        assert_eq!(users.check(None), None);
        assert_eq!(users.check(Some(&basic_auth("admin", "no"))), None);
        assert_eq!(users.check(Some("Bearer x")), None);
        let viewer = basic_auth("viewer", "pw").replace("Basic", "basic");
        assert_eq!(users.check(Some(&viewer)), Some(Access::ReadOnly));
        assert!(!Access::ReadOnly.allows(Operation::Create));
        assert!(Access::ReadOnly.allows(Operation::Download));
    }
}
