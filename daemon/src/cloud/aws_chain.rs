//! Where an S3 remote's credentials come from, in the AWS CLI's order: keys given in the
//! remote's options or the environment (object_store's own static provider), then the profile
//! (`aws_profile`: keys, role, SSO, `credential_process`), then `AWS_ROLE_ARN` with
//! `AWS_WEB_IDENTITY_TOKEN_FILE`, then object_store's container and instance-metadata
//! providers. [`AwsChain`] is the provider object_store signs with when no keys are given: it
//! keeps what it fetched until shortly before it expires, and when nothing is found says every
//! place it looked.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use object_store::CredentialProvider;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as Key, AwsCredential};

use super::aws_fetch::{self, CredentialError};
use super::aws_profile::{Files, Profile, Source};

/// Credentials are fetched anew this long before they expire, so no request is signed with
/// credentials about to lapse.
const REFRESH_BEFORE: TimeDelta = TimeDelta::minutes(5);

/// Where the remote's credentials will come from.
pub enum Plan {
    /// Keys given to object_store (options or `AWS_ACCESS_KEY_ID`), or no signing at all.
    Given(&'static str),
    Profile(Box<(Profile, Source)>),
    /// object_store's provider for what the environment names, with a label.
    Fallback(String),
    /// Nothing: the one line that says everything tried.
    Nothing(String),
}

pub struct AwsChain {
    source: Option<Arc<Source>>,
    /// object_store's provider and what it asks; None when there is nothing to ask.
    fallback: Option<(object_store::aws::AwsCredentialProvider, String)>,
    /// Every place looked at, for the error when nothing is found.
    tried: String,
    http: reqwest::Client,
    state: Mutex<State>,
}

/// A credential and when it expires (None: never).
type Cached = (Arc<AwsCredential>, Option<DateTime<Utc>>);

/// A fetch under way, which every caller that finds the cache stale awaits: a process or an
/// STS call runs once however many requests are waiting.
type Flight = Shared<BoxFuture<'static, Result<Cached, CredentialError>>>;

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    flight: Option<Flight>,
}

impl std::fmt::Debug for AwsChain {
    // Sources hold keys: only where they are from is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsChain")
            .field("tried", &self.tried)
            .finish_non_exhaustive()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The endpoint of instance metadata from `AWS_EC2_METADATA_SERVICE_ENDPOINT`, as the AWS
/// SDKs read it, unless the builder has one.
pub fn metadata_endpoint(b: AmazonS3Builder) -> AmazonS3Builder {
    match env("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        Some(e) if b.get_config_value(&Key::MetadataEndpoint).is_none() => {
            b.with_config(Key::MetadataEndpoint, e)
        }
        _ => b,
    }
}

/// Fills in what the builder lacks from the profile: region and credentials.
pub fn configure(mut b: AmazonS3Builder) -> anyhow::Result<AmazonS3Builder> {
    let files = Files::read(&env);
    let profile = files.profile();
    if b.get_config_value(&Key::Region).is_none()
        && b.get_config_value(&Key::DefaultRegion).is_none()
        && let Ok(Profile {
            region: Some(region),
            ..
        }) = &profile
    {
        b = b.with_config(Key::Region, region);
    }
    if given(&b).is_some() {
        return Ok(b);
    }
    let profile = profile?;
    let tried = tried(&profile);
    let chain = AwsChain {
        fallback: match &profile.source {
            Some(_) => None,
            None => fallback(&b)
                .map(|label| anyhow::Ok((b.clone().build()?.credentials().clone(), label)))
                .transpose()?,
        },
        source: profile.source.map(Arc::new),
        tried,
        http: super::store::side_client()?,
        state: Mutex::default(),
    };
    Ok(b.with_credentials(Arc::new(chain)))
}

/// Where the builder's credentials will come from, without fetching them.
pub fn plan(b: &AmazonS3Builder) -> anyhow::Result<Plan> {
    if let Some(label) = given(b) {
        return Ok(Plan::Given(label));
    }
    let profile = Files::read(&env).profile()?;
    if let Some(source) = profile.source.clone() {
        return Ok(Plan::Profile(Box::new((profile, source))));
    }
    Ok(match fallback(b) {
        Some(label) => Plan::Fallback(label),
        None => Plan::Nothing(tried(&profile)),
    })
}

/// What `source` of `profile` is, named for people: never a secret.
pub fn describe(profile: &Profile, source: &Source) -> String {
    let name = &profile.name;
    match source {
        Source::Static { .. } => format!(
            "the keys of AWS profile {name:?} ({} or {})",
            profile.credentials_file.display(),
            profile.config_file.display()
        ),
        Source::Process { .. } => format!("the credential_process of AWS profile {name:?}"),
        Source::AssumeRole { role, source } => format!(
            "role {} assumed at {} with {}",
            role.arn,
            role.sts_endpoint,
            describe(profile, source)
        ),
        Source::WebIdentity { role, token_file } => format!(
            "role {} assumed at {} with the web identity token {}",
            role.arn,
            role.sts_endpoint,
            token_file.display()
        ),
        Source::Sso(sso) => format!(
            "SSO role {} of account {} (AWS profile {name:?})",
            sso.role_name, sso.account_id
        ),
    }
}

/// How the builder was given keys, if it was.
fn given(b: &AmazonS3Builder) -> Option<&'static str> {
    if b.get_config_value(&Key::SkipSignature)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Some("none: requests are not signed (skip_signature)");
    }
    b.get_config_value(&Key::AccessKeyId)
        .map(|_| "the access key given (option access_key_id or $AWS_ACCESS_KEY_ID)")
}

/// What object_store's own providers would ask, when the environment or options name one;
/// None when instance metadata is turned off and nothing else is named.
fn fallback(b: &AmazonS3Builder) -> Option<String> {
    let get = |k| b.get_config_value(&k);
    if let (Some(file), Some(arn)) = (get(Key::WebIdentityTokenFile), get(Key::RoleArn)) {
        return Some(format!("role {arn} with the web identity token {file}"));
    }
    if let Some(uri) = get(Key::ContainerCredentialsRelativeUri) {
        return Some(format!(
            "container credentials at http://169.254.170.2{uri}"
        ));
    }
    if let (Some(uri), Some(_)) = (
        get(Key::ContainerCredentialsFullUri),
        get(Key::ContainerAuthorizationTokenFile),
    ) {
        return Some(format!("container credentials at {uri}"));
    }
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    let endpoint = get(Key::MetadataEndpoint).unwrap_or_else(|| "http://169.254.169.254".into());
    Some(format!("instance metadata at {endpoint}"))
}

/// Every place looked at before instance metadata, in one clause.
fn tried(profile: &Profile) -> String {
    let imds = match env("AWS_EC2_METADATA_DISABLED") {
        Some(v) if v.eq_ignore_ascii_case("true") => {
            "instance metadata (AWS_EC2_METADATA_DISABLED)"
        }
        _ => "instance metadata",
    };
    format!(
        "tried $AWS_ACCESS_KEY_ID, AWS profile {:?} in {} and {} (keys, role_arn, SSO, \
         credential_process), $AWS_WEB_IDENTITY_TOKEN_FILE, \
         $AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI, {imds}",
        profile.name,
        profile.credentials_file.display(),
        profile.config_file.display(),
    )
}

fn store_error(e: CredentialError) -> object_store::Error {
    match e.denied {
        true => object_store::Error::Unauthenticated {
            path: String::new(),
            source: Box::new(e),
        },
        false => object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        },
    }
}

fn no_credentials(why: String) -> object_store::Error {
    store_error(CredentialError {
        message: format!("no AWS credentials found: {why}"),
        denied: true,
    })
}

#[async_trait]
impl CredentialProvider for AwsChain {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let Some(source) = &self.source else {
            let Some((provider, label)) = &self.fallback else {
                return Err(no_credentials(self.tried.clone()));
            };
            // object_store's providers keep their own credentials until they expire.
            return provider.get_credential().await.map_err(|e| {
                if label.starts_with("instance metadata") {
                    no_credentials(format!("{}; {label}: {e}", self.tried))
                } else {
                    e
                }
            });
        };
        let flight = {
            let mut state = super::lock(&self.state);
            let now = Utc::now();
            if let Some((credential, expires)) = &state.cached
                && expires.is_none_or(|t| t - REFRESH_BEFORE > now)
            {
                return Ok(credential.clone());
            }
            let (source, http) = (source.clone(), self.http.clone());
            state
                .flight
                .get_or_insert_with(|| {
                    async move {
                        let f = aws_fetch::fetch(&source, &http).await?;
                        tracing::debug!(expires = ?f.expires, "fetched AWS credentials");
                        Ok((Arc::new(f.credential), f.expires))
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        // The lock is not held while the fetch runs.
        let result = flight.clone().await;
        let mut state = super::lock(&self.state);
        if state.flight.as_ref().is_some_and(|f| f.ptr_eq(&flight)) {
            state.flight = None;
        }
        let (credential, expires) = result.map_err(store_error)?;
        state.cached = Some((credential.clone(), expires));
        Ok(credential)
    }
}
