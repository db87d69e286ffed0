//! The AWS profile a remote uses, read from the shared config and credentials files the way
//! the AWS CLI reads them: `AWS_PROFILE` (else `default`), `AWS_CONFIG_FILE` (else
//! `~/.aws/config`, sections `[profile x]` and `[default]`) and `AWS_SHARED_CREDENTIALS_FILE`
//! (else `~/.aws/credentials`, sections `[x]`), the credentials file winning for a key both set.
//! What a profile says is turned into a [`Source`] here; fetching is `aws_fetch`'s job.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// How a profile's credentials are had.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Static {
        key_id: String,
        secret_key: String,
        token: Option<String>,
    },
    /// `credential_process`: a command (split as the CLI splits it, run without a shell)
    /// printing JSON.
    Process { command: String },
    /// `role_arn` with `source_profile`: STS AssumeRole signed with the source's credentials.
    AssumeRole { role: Role, source: Box<Source> },
    /// `role_arn` with `web_identity_token_file` (or `AWS_ROLE_ARN` with
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`): STS AssumeRoleWithWebIdentity.
    WebIdentity { role: Role, token_file: PathBuf },
    /// IAM Identity Center: the token `aws sso login` cached, traded for role credentials.
    Sso(Sso),
}

/// What an STS call for a role needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub arn: String,
    pub session_name: String,
    pub external_id: Option<String>,
    pub duration_seconds: Option<u32>,
    /// Where STS answers: an `endpoint_url`, else the regional or the global endpoint.
    pub sts_endpoint: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sso {
    /// The profile, for the `aws sso login --profile` hint.
    pub profile: String,
    pub cache_file: PathBuf,
    pub portal: String,
    pub account_id: String,
    pub role_name: String,
}

/// A profile as read: where its settings came from and what they make.
#[derive(Debug)]
pub struct Profile {
    pub name: String,
    pub config_file: PathBuf,
    pub credentials_file: PathBuf,
    pub region: Option<String>,
    /// None when the profile names no way to credentials.
    pub source: Option<Source>,
}

/// Settings the profile has but snapfs cannot follow, or a chain that leads nowhere.
#[derive(Debug, thiserror::Error)]
#[error("AWS profile {profile:?}: {why}")]
pub struct ProfileError {
    profile: String,
    why: String,
}

/// The files and settings profiles are read with; `env` gives environment variables.
pub struct Files<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    config_file: PathBuf,
    credentials_file: PathBuf,
    config: String,
    credentials: String,
}

impl<'a> Files<'a> {
    pub fn read(env: &'a dyn Fn(&str) -> Option<String>) -> Files<'a> {
        let home = env("HOME").map(PathBuf::from).unwrap_or_default();
        let path =
            |var: &str, default: &str| env(var).map_or_else(|| home.join(default), PathBuf::from);
        let config_file = path("AWS_CONFIG_FILE", ".aws/config");
        let credentials_file = path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
        Files {
            env,
            config: std::fs::read_to_string(&config_file).unwrap_or_default(),
            credentials: std::fs::read_to_string(&credentials_file).unwrap_or_default(),
            config_file,
            credentials_file,
        }
    }

    /// The profile in `AWS_PROFILE` (else `default`), resolved.
    pub fn profile(&self) -> Result<Profile, ProfileError> {
        let name = (self.env)("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let settings = self.settings(&name);
        let region = settings.get("region").cloned();
        let mut source = self.source(&name, 0)?;
        if source.is_none()
            && let (Some(arn), Some(file)) = (
                (self.env)("AWS_ROLE_ARN"),
                (self.env)("AWS_WEB_IDENTITY_TOKEN_FILE"),
            )
        {
            let mut s = settings.clone();
            s.insert("role_arn".into(), arn);
            if let Some(n) = (self.env)("AWS_ROLE_SESSION_NAME") {
                s.insert("role_session_name".into(), n);
            }
            let role = self.role(&s)?;
            source = Some(Source::WebIdentity {
                role,
                token_file: file.into(),
            });
        }
        Ok(Profile {
            name,
            config_file: self.config_file.clone(),
            credentials_file: self.credentials_file.clone(),
            region,
            source,
        })
    }

    /// A profile's settings: the config file's section under the credentials file's.
    fn settings(&self, name: &str) -> BTreeMap<String, String> {
        let section = if name == "default" {
            name.to_string()
        } else {
            format!("profile {name}")
        };
        let mut out = ini_section(&self.config, &section);
        if out.is_empty() && name != "default" {
            // Older config files name profiles without the `profile ` word.
            out = ini_section(&self.config, name);
        }
        out.extend(ini_section(&self.credentials, name));
        out
    }

    /// The source of profile `name`, `depth` steps down a `source_profile` chain. The order is
    /// the CLI's: a role first, then SSO, static keys, and a process.
    fn source(&self, name: &str, depth: usize) -> Result<Option<Source>, ProfileError> {
        let fail = |why: String| ProfileError {
            profile: name.to_string(),
            why,
        };
        if depth > 8 {
            return Err(fail("source_profile chain is too long (a loop?)".into()));
        }
        let s = self.settings(name);
        let get = |k: &str| s.get(k).filter(|v| !v.is_empty()).cloned();
        let keys = match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(key_id), Some(secret_key)) => Some(Source::Static {
                key_id,
                secret_key,
                token: get("aws_session_token"),
            }),
            _ => None,
        };
        // A profile that is its own source_profile holds the keys its role is assumed with.
        let self_sourced = get("source_profile").as_deref() == Some(name) && depth > 0;
        if get("role_arn").is_some() && !self_sourced {
            let role = self.role(&s)?;
            if let Some(file) = get("web_identity_token_file") {
                return Ok(Some(Source::WebIdentity {
                    role,
                    token_file: file.into(),
                }));
            }
            let Some(from) = get("source_profile") else {
                let why = match get("credential_source") {
                    Some(c) => {
                        format!("credential_source = {c} is not supported; use source_profile")
                    }
                    None => "role_arn needs source_profile or web_identity_token_file".into(),
                };
                return Err(fail(why));
            };
            let source = if from == name {
                keys.ok_or_else(|| fail("source_profile is itself but it has no keys".into()))?
            } else {
                self.source(&from, depth + 1)?
                    .ok_or_else(|| fail(format!("source_profile {from:?} has no credentials")))?
            };
            return Ok(Some(Source::AssumeRole {
                role,
                source: Box::new(source),
            }));
        }
        if let Some(sso) = self.sso(name, &s).map_err(fail)? {
            return Ok(Some(Source::Sso(sso)));
        }
        if keys.is_some() {
            return Ok(keys);
        }
        Ok(get("credential_process").map(|command| Source::Process { command }))
    }

    fn role(&self, s: &BTreeMap<String, String>) -> Result<Role, ProfileError> {
        let get = |k: &str| s.get(k).filter(|v| !v.is_empty()).cloned();
        let env = self.env;
        let region = get("region")
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let legacy = get("sts_regional_endpoints")
            .or_else(|| env("AWS_STS_REGIONAL_ENDPOINTS"))
            .is_some_and(|v| v == "legacy");
        let sts_endpoint = env("AWS_ENDPOINT_URL_STS")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| get("endpoint_url"))
            .unwrap_or_else(|| match legacy {
                true => "https://sts.amazonaws.com".into(),
                false => format!("https://sts.{region}.amazonaws.com"),
            });
        let duration_seconds = match get("duration_seconds") {
            Some(d) => Some(d.parse().map_err(|_| ProfileError {
                profile: (self.env)("AWS_PROFILE").unwrap_or_else(|| "default".into()),
                why: format!("duration_seconds {d:?} is not a number of seconds"),
            })?),
            None => None,
        };
        Ok(Role {
            arn: get("role_arn").unwrap_or_default(),
            session_name: get("role_session_name")
                .unwrap_or_else(|| format!("snapfs-{}", chrono::Utc::now().timestamp())),
            external_id: get("external_id"),
            duration_seconds,
            sts_endpoint,
            region,
        })
    }

    /// SSO settings of profile `name`: an `sso_session` section or the legacy keys.
    fn sso(&self, name: &str, s: &BTreeMap<String, String>) -> Result<Option<Sso>, String> {
        let get = |k: &str| s.get(k).filter(|v| !v.is_empty()).cloned();
        let (key, start_url, region) = if let Some(session) = get("sso_session") {
            let section = ini_section(&self.config, &format!("sso-session {session}"));
            if section.is_empty() {
                return Err(format!(
                    "sso_session {session:?} has no [sso-session {session}] section"
                ));
            }
            let url = section.get("sso_start_url").cloned();
            (session, url, section.get("sso_region").cloned())
        } else if let Some(url) = get("sso_start_url") {
            (url.clone(), Some(url), get("sso_region"))
        } else {
            return Ok(None);
        };
        let need = |v: Option<String>, what: &str| v.ok_or_else(|| format!("SSO needs {what}"));
        need(start_url, "sso_start_url")?;
        let region = need(region, "sso_region")?;
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let home = (self.env)("HOME").map(PathBuf::from).unwrap_or_default();
        Ok(Some(Sso {
            profile: name.to_string(),
            cache_file: home.join(".aws/sso/cache").join(format!("{hex}.json")),
            portal: (self.env)("AWS_ENDPOINT_URL_SSO")
                .unwrap_or_else(|| format!("https://portal.sso.{region}.amazonaws.com")),
            account_id: need(get("sso_account_id"), "sso_account_id")?,
            role_name: need(get("sso_role_name"), "sso_role_name")?,
        }))
    }
}

/// The `key = value` pairs of one `[section]` of an INI file.
fn ini_section(text: &str, section: &str) -> BTreeMap<String, String> {
    let mut inside = false;
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files<'a>(
        env: &'a dyn Fn(&str) -> Option<String>,
        config: &str,
        credentials: &str,
    ) -> Files<'a> {
        Files {
            env,
            config_file: "config".into(),
            credentials_file: "credentials".into(),
            config: config.into(),
            credentials: credentials.into(),
        }
    }

    #[test]
    fn reads_profiles_of_ini_files() {
        let text = "[default]\naws_access_key_id = A\n# note\n[profile ci]\nregion=eu-west-1\n";
        assert_eq!(ini_section(text, "default")["aws_access_key_id"], "A");
        assert_eq!(ini_section(text, "profile ci")["region"], "eu-west-1");
        assert!(ini_section(text, "other").is_empty());
    }

    #[test]
    fn keys_in_either_file_the_credentials_file_winning() {
        let env = |k: &str| (k == "AWS_PROFILE").then(|| "ci".to_string());
        let config =
            "[profile ci]\naws_access_key_id = C\naws_secret_access_key = S\nregion = eu-west-1\n";
        let p = files(&env, config, "").profile().unwrap();
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
        assert!(matches!(p.source, Some(Source::Static { ref key_id, .. }) if key_id == "C"));
        let p = files(&env, config, "[ci]\naws_access_key_id = K\n")
            .profile()
            .unwrap();
        assert!(matches!(p.source, Some(Source::Static { ref key_id, .. }) if key_id == "K"));
    }

    #[test]
    fn roles_chain_to_their_source_profile() {
        let env = |k: &str| match k {
            "AWS_PROFILE" => Some("deploy".to_string()),
            "AWS_ENDPOINT_URL_STS" => Some("http://127.0.0.1:1".to_string()),
            _ => None,
        };
        let config = "[profile deploy]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = base\n\
                      external_id = x\nduration_seconds = 900\n\
                      [profile base]\ncredential_process = /bin/creds --json\n";
        let p = files(&env, config, "").profile().unwrap();
        let Some(Source::AssumeRole { role, source }) = p.source else {
            panic!("{:?}", p.source)
        };
        assert_eq!(role.sts_endpoint, "http://127.0.0.1:1");
        assert_eq!(role.external_id.as_deref(), Some("x"));
        assert_eq!(role.duration_seconds, Some(900));
        assert_eq!(
            *source,
            Source::Process {
                command: "/bin/creds --json".into()
            }
        );
        let looping = "[profile deploy]\nrole_arn = a\nsource_profile = other\n\
                       [profile other]\nrole_arn = b\nsource_profile = deploy\n";
        assert!(files(&env, looping, "").profile().is_err());
    }

    #[test]
    fn regional_sts_unless_legacy() {
        let env = |_: &str| None;
        let c = "[default]\nrole_arn = a\nweb_identity_token_file = /t\nregion = eu-west-2\n";
        let Some(Source::WebIdentity { role, .. }) = files(&env, c, "").profile().unwrap().source
        else {
            panic!()
        };
        assert_eq!(role.sts_endpoint, "https://sts.eu-west-2.amazonaws.com");
        let c = format!("{c}sts_regional_endpoints = legacy\n");
        let Some(Source::WebIdentity { role, .. }) = files(&env, &c, "").profile().unwrap().source
        else {
            panic!()
        };
        assert_eq!(role.sts_endpoint, "https://sts.amazonaws.com");
    }

    #[test]
    fn sso_sessions_name_their_token_cache() {
        let env = |k: &str| (k == "HOME").then(|| "/h".to_string());
        let c = "[default]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = R\n\
                 [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n\
                 sso_region = eu-west-1\n";
        let Some(Source::Sso(sso)) = files(&env, c, "").profile().unwrap().source else {
            panic!()
        };
        // SHA-1 of "corp".
        let name = "ee0bfd2552fbd840c02cc48b6e823320543c450f";
        assert_eq!(
            sso.cache_file,
            PathBuf::from(format!("/h/.aws/sso/cache/{name}.json"))
        );
        assert_eq!(sso.portal, "https://portal.sso.eu-west-1.amazonaws.com");
    }
}
