//! Fetching the credentials a profile's [`Source`] names: running a `credential_process`,
//! asking STS for a role (AssumeRole signed with SigV4, or AssumeRoleWithWebIdentity), and
//! trading a cached IAM Identity Center token at the SSO portal.

use std::path::Path;
use std::process::Stdio;

use chrono::{DateTime, TimeZone, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};
use serde::Deserialize;

use super::aws_profile::{Role, Source, Sso};

/// Credentials and when they stop working (None: never).
pub struct Fetched {
    pub credential: AwsCredential,
    pub expires: Option<DateTime<Utc>>,
}

/// Why no credentials came: `denied` when a user must act (log in, fix a key) rather than wait.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CredentialError {
    pub message: String,
    pub denied: bool,
}

fn failed(message: impl Into<String>) -> CredentialError {
    CredentialError {
        message: message.into(),
        denied: false,
    }
}

fn denied(message: impl Into<String>) -> CredentialError {
    CredentialError {
        message: message.into(),
        denied: true,
    }
}

pub fn fetch<'a>(
    source: &'a Source,
    http: &'a reqwest::Client,
) -> BoxFuture<'a, Result<Fetched, CredentialError>> {
    async move {
        match source {
            Source::Static {
                key_id,
                secret_key,
                token,
            } => Ok(Fetched {
                credential: AwsCredential {
                    key_id: key_id.clone(),
                    secret_key: secret_key.clone(),
                    token: token.clone(),
                },
                expires: None,
            }),
            Source::Process { command } => process(command).await,
            Source::AssumeRole { role, source } => {
                let base = fetch(source, http).await?;
                let mut form = vec![("Action", "AssumeRole".to_string())];
                if let Some(id) = &role.external_id {
                    form.push(("ExternalId", id.clone()));
                }
                sts(role, form, Some(&base.credential), http).await
            }
            Source::WebIdentity { role, token_file } => {
                let token = std::fs::read_to_string(token_file).map_err(|e| {
                    failed(format!(
                        "reading the web identity token {}: {e}",
                        token_file.display()
                    ))
                })?;
                let form = vec![
                    ("Action", "AssumeRoleWithWebIdentity".to_string()),
                    ("WebIdentityToken", token.trim().to_string()),
                ];
                sts(role, form, None, http).await
            }
            Source::Sso(sso) => sso_credentials(sso, http).await,
        }
    }
    .boxed()
}

/// What a `credential_process` prints (its Version 1 format).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput {
    version: u32,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expiration: Option<String>,
}

async fn process(command: &str) -> Result<Fetched, CredentialError> {
    let args = split_command(command).ok_or_else(|| {
        failed(format!(
            "credential_process {command:?} has an unclosed quote"
        ))
    })?;
    let Some((program, rest)) = args.split_first() else {
        return Err(failed("credential_process is empty"));
    };
    let out = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            failed(format!(
                "credential_process {program:?} could not start: {e}"
            ))
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim().replace('\n', " ");
        return Err(failed(format!(
            "credential_process {program:?} failed ({}): {stderr}",
            out.status
        )));
    }
    let parsed: ProcessOutput = serde_json::from_slice(&out.stdout).map_err(|e| {
        failed(format!(
            "credential_process {program:?} printed no credentials JSON: {e}"
        ))
    })?;
    if parsed.version != 1 {
        return Err(failed(format!(
            "credential_process {program:?} printed Version {}, not 1",
            parsed.version
        )));
    }
    let expires = match &parsed.expiration {
        Some(t) => Some(time(t).ok_or_else(|| {
            failed(format!(
                "credential_process {program:?} printed Expiration {t:?}, not an ISO 8601 time"
            ))
        })?),
        None => None,
    };
    Ok(Fetched {
        credential: AwsCredential {
            key_id: parsed.access_key_id,
            secret_key: parsed.secret_access_key,
            token: parsed.session_token.filter(|t| !t.is_empty()),
        },
        expires,
    })
}

fn time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Splits a command line into words the way a POSIX shell would, without expanding anything:
/// blanks separate, single quotes keep everything, double quotes keep all but `\"` and `\\`,
/// and a backslash outside quotes keeps the next character. None on an unclosed quote.
fn split_command(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_default();
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_default();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\') => w.push(c),
                            c => {
                                w.push('\\');
                                w.push(c);
                            }
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_default().push(chars.next()?),
            c => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// One STS call for `role`; `sign_with` signs it (AssumeRole), None leaves it unsigned
/// (AssumeRoleWithWebIdentity).
async fn sts(
    role: &Role,
    mut form: Vec<(&str, String)>,
    sign_with: Option<&AwsCredential>,
    http: &reqwest::Client,
) -> Result<Fetched, CredentialError> {
    let action = form.first().map(|(_, a)| a.clone()).unwrap_or_default();
    form.extend([
        ("Version", "2011-06-15".to_string()),
        ("RoleArn", role.arn.clone()),
        ("RoleSessionName", role.session_name.clone()),
    ]);
    if let Some(d) = role.duration_seconds {
        form.push(("DurationSeconds", d.to_string()));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let endpoint = role.sts_endpoint.trim_end_matches('/').to_string() + "/";
    let what = format!("STS {action} of {} at {endpoint}", role.arn);
    let mut request = HttpRequest::new(HttpRequestBody::from(body.clone()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = endpoint
        .parse()
        .map_err(|e| failed(format!("{what}: the endpoint is not a URL: {e}")))?;
    request.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    if let Some(credential) = sign_with {
        AwsAuthorizer::new(credential, "sts", &role.region)
            .try_authorize(&mut request, None)
            .map_err(|e| failed(format!("{what}: signing: {e}")))?;
    }
    let response = http
        .post(&endpoint)
        .headers(request.headers().clone())
        .body(body)
        .send()
        .await
        .map_err(|e| failed(format!("{what}: {e}")))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| failed(format!("{what}: {e}")))?;
    if !status.is_success() {
        let code = xml_value(&text, "Code").unwrap_or_default();
        let message = xml_value(&text, "Message").unwrap_or_default();
        let why = format!("{what}: {status} {code} {message}");
        return Err(match status.as_u16() {
            400 | 401 | 403 => denied(why.trim_end()),
            _ => failed(why.trim_end()),
        });
    }
    let field = |tag: &str| {
        xml_value(&text, tag).ok_or_else(|| failed(format!("{what}: the answer has no {tag}")))
    };
    Ok(Fetched {
        credential: AwsCredential {
            key_id: field("AccessKeyId")?,
            secret_key: field("SecretAccessKey")?,
            token: Some(field("SessionToken")?),
        },
        expires: xml_value(&text, "Expiration").and_then(|t| time(&t)),
    })
}

/// The text of the first `<tag>` in an XML answer; STS answers are flat enough for this.
fn xml_value(text: &str, tag: &str) -> Option<String> {
    let (_, rest) = text.split_once(&format!("<{tag}>"))?;
    let (value, _) = rest.split_once(&format!("</{tag}>"))?;
    Some(value.trim().to_string())
}

/// The token `aws sso login` caches.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SsoToken {
    access_token: String,
    expires_at: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SsoAnswer {
    role_credentials: SsoRoleCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SsoRoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    /// Milliseconds since the epoch.
    expiration: i64,
}

async fn sso_credentials(sso: &Sso, http: &reqwest::Client) -> Result<Fetched, CredentialError> {
    let login = format!("run `aws sso login --profile {}`", sso.profile);
    let token = read_sso_token(&sso.cache_file).map_err(|why| denied(format!("{why}: {login}")))?;
    let expires_at = time(&token.expires_at);
    if expires_at.is_none_or(|t| t <= Utc::now()) {
        return Err(denied(format!(
            "the SSO token of profile {} expired at {}: {login}",
            sso.profile, token.expires_at
        )));
    }
    let base = format!(
        "{}/federation/credentials",
        sso.portal.trim_end_matches('/')
    );
    let what = format!("SSO GetRoleCredentials at {base}");
    let mut url = url::Url::parse(&base).map_err(|e| failed(format!("{what}: {e}")))?;
    url.query_pairs_mut()
        .append_pair("account_id", &sso.account_id)
        .append_pair("role_name", &sso.role_name);
    let response = http
        .get(url)
        .header("x-amz-sso_bearer_token", token.access_token)
        .send()
        .await
        .map_err(|e| failed(format!("{what}: {e}")))?;
    let status = response.status();
    if matches!(status.as_u16(), 401 | 403) {
        return Err(denied(format!("{what}: {status}: {login}")));
    }
    if !status.is_success() {
        return Err(failed(format!("{what}: {status}")));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| failed(format!("{what}: {e}")))?;
    let answer: SsoAnswer =
        serde_json::from_slice(&body).map_err(|e| failed(format!("{what}: {e}")))?;
    let c = answer.role_credentials;
    Ok(Fetched {
        credential: AwsCredential {
            key_id: c.access_key_id,
            secret_key: c.secret_access_key,
            token: Some(c.session_token),
        },
        expires: Utc.timestamp_millis_opt(c.expiration).single(),
    })
}

fn read_sso_token(path: &Path) -> Result<SsoToken, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("no SSO token cached at {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "the SSO token cached at {} is unreadable: {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_commands_as_a_shell_would_without_one() {
        let w = split_command(r#"/bin/get-creds --profile 'my team' "a \"b\"" c\ d"#).unwrap();
        assert_eq!(
            w,
            ["/bin/get-creds", "--profile", "my team", r#"a "b""#, "c d"]
        );
        assert_eq!(split_command("  x  ").unwrap(), ["x"]);
        assert!(split_command("a 'b").is_none());
        assert!(split_command("").unwrap().is_empty());
    }

    #[test]
    fn reads_sts_answers() {
        let xml = "<AssumeRoleResponse><AssumeRoleResult><Credentials>\
                   <AccessKeyId>ASIA</AccessKeyId><Expiration>2030-01-01T00:00:00Z</Expiration>\
                   </Credentials></AssumeRoleResult></AssumeRoleResponse>";
        assert_eq!(xml_value(xml, "AccessKeyId").as_deref(), Some("ASIA"));
        assert!(time(&xml_value(xml, "Expiration").unwrap()).is_some());
        assert_eq!(xml_value(xml, "SessionToken"), None);
    }
}
