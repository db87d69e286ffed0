//! Application Default Credentials of type `impersonated_service_account` (what
//! `gcloud auth application-default login --impersonate-service-account` writes), which
//! object_store does not read: the file's source credentials (a user's refresh token or a
//! service-account key) ask IAM Credentials' generateAccessToken for a token of the
//! impersonated account. Tokens are kept until shortly before they expire.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use object_store::CredentialProvider;
use object_store::gcp::GoogleConfigKey as Key;
use object_store::gcp::{GcpCredential, GcpCredentialProvider, GoogleCloudStorageBuilder};
use serde::Deserialize;

/// Tokens are fetched anew this long before they expire.
const REFRESH_BEFORE: TimeDelta = TimeDelta::minutes(5);

#[derive(Deserialize)]
struct ImpersonatedFile {
    service_account_impersonation_url: String,
    source_credentials: serde_json::Value,
    #[serde(default)]
    delegates: Vec<String>,
}

/// A user's credentials from `gcloud auth application-default login`.
#[derive(Deserialize)]
struct AuthorizedUser {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    /// Google's token endpoint unless the file names another.
    token_uri: Option<String>,
}

/// Where the impersonated account's tokens come from.
enum SourceToken {
    User(AuthorizedUser),
    /// object_store's provider for a service-account key.
    ObjectStore(GcpCredentialProvider),
}

pub struct Impersonated {
    url: String,
    delegates: Vec<String>,
    source: SourceToken,
    http: reqwest::Client,
    cached: Mutex<Option<(Arc<GcpCredential>, DateTime<Utc>)>>,
}

impl std::fmt::Debug for Impersonated {
    // The source holds secrets: only the URL is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impersonated")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The ADC file object_store would read: `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's.
fn adc_file(b: &GoogleCloudStorageBuilder) -> Option<PathBuf> {
    if let Some(p) = b.get_config_value(&Key::ApplicationCredentials) {
        return Some(p.into());
    }
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".config/gcloud/application_default_credentials.json");
    path.is_file().then_some(path)
}

/// Gives the builder an impersonating provider when no key is given and the ADC file is an
/// `impersonated_service_account` one; otherwise leaves it to object_store.
pub fn configure(b: GoogleCloudStorageBuilder) -> anyhow::Result<GoogleCloudStorageBuilder> {
    let given = [
        Key::ServiceAccount,
        Key::ServiceAccountKey,
        Key::BearerToken,
    ]
    .iter()
    .any(|k| b.get_config_value(k).is_some());
    let Some(path) = adc_file(&b).filter(|_| !given) else {
        return Ok(b);
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(b);
    };
    let kind = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_string));
    if kind.as_deref() != Some("impersonated_service_account") {
        return Ok(b);
    }
    let what = || format!("the impersonation credentials in {}", path.display());
    let file: ImpersonatedFile = serde_json::from_str(&text).with_context(what)?;
    let source = match file.source_credentials.get("type").and_then(|t| t.as_str()) {
        Some("authorized_user") => SourceToken::User(
            serde_json::from_value(file.source_credentials.clone()).with_context(what)?,
        ),
        Some("service_account") => {
            let key = file.source_credentials.to_string();
            let store = GoogleCloudStorageBuilder::new()
                .with_bucket_name("unused")
                .with_service_account_key(key)
                .build()
                .with_context(what)?;
            SourceToken::ObjectStore(store.credentials().clone())
        }
        other => anyhow::bail!(
            "{}: source credentials of type {other:?} are not supported",
            what()
        ),
    };
    let provider = Impersonated {
        url: file.service_account_impersonation_url,
        delegates: file.delegates,
        source,
        http: super::store::side_client()?,
        cached: Mutex::new(None),
    };
    Ok(b.with_credentials(Arc::new(provider)))
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "GCS",
        source: message.into(),
    }
}

#[derive(Deserialize)]
struct RefreshAnswer {
    access_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessToken {
    access_token: String,
    expire_time: String,
}

impl Impersonated {
    async fn source_token(&self) -> object_store::Result<String> {
        let user = match &self.source {
            SourceToken::ObjectStore(p) => return Ok(p.get_credential().await?.bearer.clone()),
            SourceToken::User(u) => u,
        };
        let uri = user
            .token_uri
            .as_deref()
            .unwrap_or("https://oauth2.googleapis.com/token");
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "refresh_token"),
                ("client_id", &user.client_id),
                ("client_secret", &user.client_secret),
                ("refresh_token", &user.refresh_token),
            ])
            .finish();
        let answer: RefreshAnswer = self
            .post(uri, None, "application/x-www-form-urlencoded", body)
            .await?;
        Ok(answer.access_token)
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        bearer: Option<&str>,
        content_type: &str,
        body: String,
    ) -> object_store::Result<T> {
        let mut request = self
            .http
            .post(url)
            .header("content-type", content_type)
            .body(body);
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| generic(format!("{url}: {e}")))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| generic(format!("{url}: {e}")))?;
        if !status.is_success() {
            let why = format!("{url}: {status} {}", String::from_utf8_lossy(&bytes).trim());
            return Err(match status.as_u16() {
                401 | 403 => object_store::Error::Unauthenticated {
                    path: String::new(),
                    source: why.into(),
                },
                _ => generic(why),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| generic(format!("{url}: {e}")))
    }
}

#[async_trait]
impl CredentialProvider for Impersonated {
    type Credential = GcpCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<GcpCredential>> {
        if let Some((token, expires)) = &*super::lock(&self.cached)
            && *expires - REFRESH_BEFORE > Utc::now()
        {
            return Ok(token.clone());
        }
        let source = self.source_token().await?;
        let body = serde_json::json!({
            "scope": ["https://www.googleapis.com/auth/devstorage.read_write"],
            "delegates": self.delegates,
        })
        .to_string();
        let answer: AccessToken = self
            .post(&self.url, Some(&source), "application/json", body)
            .await?;
        let expires = DateTime::parse_from_rfc3339(&answer.expire_time)
            .map_err(|e| generic(format!("{}: expireTime: {e}", self.url)))?
            .with_timezone(&Utc);
        let token = Arc::new(GcpCredential {
            bearer: answer.access_token,
        });
        *super::lock(&self.cached) = Some((token.clone(), expires));
        Ok(token)
    }
}
