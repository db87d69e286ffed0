//! Bearer-token authentication and deny rules standing in for RBAC.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::ApiError;
use crate::resources::ResourceType;

/// The user of requests without a token. Anonymous requests are allowed, like an API server
/// with anonymous auth bound to cluster-admin (a guess that keeps curl and plain clients simple).
pub(crate) const ANONYMOUS: &str = "system:anonymous";

#[derive(Debug, Clone)]
struct Rule {
    user: Option<String>,
    verb: Option<String>,
    resource: String,
    namespace: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Auth {
    tokens: Mutex<HashMap<String, String>>,
    denied: Mutex<Vec<Rule>>,
}

/// `"*"` or empty means any.
fn any(s: &str) -> Option<String> {
    (!s.is_empty() && s != "*").then(|| s.to_string())
}

impl Auth {
    pub fn add_token(&self, token: &str, user: &str) {
        self.lock_tokens()
            .insert(token.to_string(), user.to_string());
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_denied(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.denied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user an `Authorization` header names; 401 for an unknown token.
    pub fn authenticate(&self, header: Option<&str>) -> Result<String, ApiError> {
        let Some(header) = header else {
            return Ok(ANONYMOUS.to_string());
        };
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(ApiError::unauthorized)?;
        self.lock_tokens()
            .get(token.trim())
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }

    pub fn deny(&self, user: &str, verb: &str, resource: &str, namespace: &str) {
        self.lock_denied().push(Rule {
            user: any(user),
            verb: any(verb),
            resource: resource.to_string(),
            namespace: any(namespace),
        });
    }

    pub fn allow_all(&self) {
        self.lock_denied().clear();
    }

    /// 403 with the API server's wording when a deny rule matches. `resource` may carry a
    /// subresource (`pods/exec`); `name` is the object's, empty for collections.
    pub fn authorize(
        &self,
        user: &str,
        verb: &str,
        rt: &ResourceType,
        (resource, name): (&str, &str),
        namespace: &str,
    ) -> Result<(), ApiError> {
        let denied = self.lock_denied().iter().any(|r| {
            r.user.as_deref().is_none_or(|u| u == user)
                && r.verb.as_deref().is_none_or(|v| v == verb)
                && (r.resource == resource || r.resource == "*")
                && r.namespace.as_deref().is_none_or(|n| n == namespace)
        });
        if !denied {
            return Ok(());
        }
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{namespace}\"")
        };
        let why = format!(
            "User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            rt.group
        );
        // The forbidden error names the resource without its subresource, and the object.
        if name.is_empty() {
            Err(ApiError::forbidden(format!(
                "{} is forbidden: {why}",
                rt.qualified()
            )))
        } else {
            Err(ApiError::forbidden_object(rt, name, &why))
        }
    }
}
