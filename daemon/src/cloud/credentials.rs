//! Credentials found where each cloud's own tools keep them and object_store does not look:
//! the AWS shared credentials and config files, and Azure storage connection strings.
//! Environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`) are read by object_store's
//! `from_env` builders; a remote's `options` override both.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use object_store::aws::AmazonS3ConfigKey;
use object_store::azure::AzureConfigKey;

/// Keys from `~/.aws/credentials` and `~/.aws/config` for the profile in `AWS_PROFILE` (or
/// `default`), when neither the environment nor the options give them already.
pub fn aws_shared(options: &BTreeMap<String, String>) -> Vec<(AmazonS3ConfigKey, String)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let home = || env("HOME").map(PathBuf::from);
    let read = |var: &str, default: &str| {
        let path = env(var)
            .map(PathBuf::from)
            .or_else(|| home().map(|h| h.join(default)))?;
        std::fs::read_to_string(path).ok()
    };
    let has = |names: &[&str], vars: &[&str]| {
        names.iter().any(|n| options.contains_key(*n)) || vars.iter().any(|v| env(v).is_some())
    };
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let mut out = Vec::new();
    if !has(
        &["access_key_id", "aws_access_key_id", "skip_signature"],
        &["AWS_ACCESS_KEY_ID"],
    ) && let Some(text) = read("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")
    {
        let s = ini_section(&text, &profile);
        for (name, key) in [
            ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
            ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
            ("aws_session_token", AmazonS3ConfigKey::Token),
        ] {
            if let Some(v) = s.get(name) {
                out.push((key, v.clone()));
            }
        }
    }
    if !has(
        &[
            "region",
            "aws_region",
            "aws_default_region",
            "default_region",
        ],
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
    ) && let Some(text) = read("AWS_CONFIG_FILE", ".aws/config")
    {
        // The config file names profiles `[profile x]`, except `[default]`.
        let section = if profile == "default" {
            profile.clone()
        } else {
            format!("profile {profile}")
        };
        if let Some(region) = ini_section(&text, &section).get("region") {
            out.push((AmazonS3ConfigKey::Region, region.clone()));
        }
    }
    out
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

/// Settings of an Azure storage connection string, from the `connection_string` option
/// (removed from `options`, as object_store does not know it) or
/// `AZURE_STORAGE_CONNECTION_STRING`.
pub fn azure_connection_string(
    options: &mut BTreeMap<String, String>,
) -> anyhow::Result<Vec<(AzureConfigKey, String)>> {
    let text = match options.remove("connection_string") {
        Some(t) => t,
        None => match std::env::var("AZURE_STORAGE_CONNECTION_STRING") {
            Ok(t) if !t.is_empty() => t,
            _ => return Ok(Vec::new()),
        },
    };
    parse_connection_string(&text)
}

fn parse_connection_string(text: &str) -> anyhow::Result<Vec<(AzureConfigKey, String)>> {
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("the Azure connection string has a part without '=': {part:?}");
        };
        let key = match k.trim() {
            "AccountName" => AzureConfigKey::AccountName,
            "AccountKey" => AzureConfigKey::AccessKey,
            "BlobEndpoint" => AzureConfigKey::Endpoint,
            "SharedAccessSignature" => AzureConfigKey::SasKey,
            "UseDevelopmentStorage" => AzureConfigKey::UseEmulator,
            // Protocol and suffixes only matter without a BlobEndpoint; other services' ends
            // are not ours.
            _ => continue,
        };
        out.push((key, v.trim().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_profiles_of_ini_files() {
        let text = "[default]\naws_access_key_id = A\n# note\n[profile ci]\nregion=eu-west-1\n";
        assert_eq!(ini_section(text, "default")["aws_access_key_id"], "A");
        assert_eq!(ini_section(text, "profile ci")["region"], "eu-west-1");
        assert!(ini_section(text, "other").is_empty());
    }

    #[test]
    fn reads_connection_strings() {
        let s = "DefaultEndpointsProtocol=http;AccountName=dev;AccountKey=a2V5==;\
                 BlobEndpoint=http://127.0.0.1:10000/dev;";
        let got = parse_connection_string(s).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.contains(&(AzureConfigKey::AccessKey, "a2V5==".into())));
        assert!(got.contains(&(
            AzureConfigKey::Endpoint,
            "http://127.0.0.1:10000/dev".into()
        )));
        assert!(parse_connection_string("AccountName").is_err());
    }
}
