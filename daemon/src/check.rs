//! `snapfsd --check` (what `snapfs config check` runs): the configuration parsed, then each
//! target with its resolved settings and where its credentials would come from, never the
//! credentials; or the problem, at its file and line.

use std::collections::BTreeMap;
use std::path::Path;

use snapfs_control::paths::Paths;
use snapfs_control::units::{format_duration, format_size};

use crate::config::{Config, Password};

/// The report for the configuration at `path` (None: the default file), or the problem as
/// `FILE:LINE: cause` (no line where none applies).
pub fn check(path: Option<&Path>, paths: &Paths) -> Result<String, String> {
    let file = path.map_or_else(|| paths.config_file(), Path::to_path_buf);
    match Config::load(path, paths) {
        Ok(config) => Ok(format!(
            "{}: ok\n{}",
            file.display(),
            report(&config, paths)
        )),
        Err(e) => {
            let Ok(text) = std::fs::read_to_string(&file) else {
                return Err(format!("{e:#}"));
            };
            // The first link of the chain only says which file; the place says it better.
            let cause = e
                .chain()
                .skip(1)
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            let (line, cause) = match e.chain().find_map(|c| c.downcast_ref::<toml::de::Error>()) {
                Some(t) => (
                    t.span().map(|s| line_at(&text, s.start)),
                    t.message().trim().to_string(),
                ),
                None => (line_of(&text, &cause), cause),
            };
            Err(match line {
                Some(n) => format!("{}:{n}: {cause}", file.display()),
                None => format!("{}: {cause}", file.display()),
            })
        }
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
}

/// The line a message about a key is most likely about: one setting a key the message names
/// to a value it quotes, else the first setting a key it names.
fn line_of(text: &str, message: &str) -> Option<usize> {
    let names = |key: &str| {
        message
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w == key)
    };
    let settings: Vec<(usize, &str, &str)> = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            (!k.is_empty() && !k.starts_with('#')).then_some((i + 1, k, v.trim()))
        })
        .filter(|(_, k, _)| names(k))
        .collect();
    settings
        .iter()
        .find(|(_, _, v)| !v.is_empty() && message.contains(*v))
        .or_else(|| settings.first())
        .map(|(n, _, _)| *n)
}

/// Every target, one line each.
pub fn report(c: &Config, paths: &Paths) -> String {
    let mut out = vec![format!(
        "cache: {}, at most {} on disk, {} free kept, {} in memory",
        c.cache_dir.display(),
        format_size(c.cache_max),
        format_size(c.cache_min_free),
        format_size(c.cache_memory)
    )];
    for r in &c.remotes {
        let ttl = r.ttl.map_or("never".to_string(), format_duration);
        out.push(format!(
            "cloud/{}: {}; snapshots expire: {ttl}; credentials: {}",
            r.name,
            r.url,
            cloud_credentials(&r.url, &r.options)
        ));
    }
    for h in &c.hivemq {
        let password = match (&h.password, &h.username) {
            (Some(Password::Given(_)), _) => {
                ", a password from password_env or password_file".to_string()
            }
            (Some(Password::InSecret(s)), _) => {
                format!(", the password in key {} of Secret {}", s.key, s.name)
            }
            (None, Some(_)) => ", no password".to_string(),
            (None, None) => ", no credentials".to_string(),
        };
        let user = h
            .username
            .as_deref()
            .map(|u| format!(", user {u}"))
            .unwrap_or_default();
        out.push(format!("hivemq/{}: {}{user}{password}", h.name, h.endpoint));
    }
    out.extend(crate::k8s::describe(c.kubernetes.as_deref(), &c.k8s, paths));
    out.join("\n") + "\n"
}

/// Where a cloud remote's credentials may come from, by name only: options, variables and
/// files that are there.
fn cloud_credentials(url: &str, options: &BTreeMap<String, String>) -> String {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    let (vars, files): (&[&str], &[&str]) = match scheme {
        "file" | "memory" => return "none needed".into(),
        "s3" | "s3a" => (
            &[
                "AWS_ACCESS_KEY_ID",
                "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            ],
            &[".aws/credentials", ".aws/config"],
        ),
        "gs" => (
            &[
                "GOOGLE_APPLICATION_CREDENTIALS",
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_SERVICE_ACCOUNT_PATH",
                "GOOGLE_SERVICE_ACCOUNT_KEY",
            ],
            &[".config/gcloud/application_default_credentials.json"],
        ),
        _ => (
            &[
                "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_CONNECTION_STRING",
                "AZURE_CLIENT_ID",
                "AZURE_FEDERATED_TOKEN_FILE",
            ],
            &[".azure/azureProfile.json"],
        ),
    };
    let mut found: Vec<String> = options
        .keys()
        .filter(|k| {
            !matches!(
                k.as_str(),
                "endpoint" | "region" | "allow_http" | "retry_max" | "retry_timeout"
            )
        })
        .map(|k| format!("option {k}"))
        .collect();
    found.extend(
        vars.iter()
            .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
            .map(|v| format!("${v}")),
    );
    if let Some(home) = std::env::var_os("HOME") {
        let home = Path::new(&home);
        found.extend(
            files
                .iter()
                .filter(|f| home.join(f).is_file())
                .map(|f| format!("~/{f}")),
        );
    }
    let listed = if found.is_empty() {
        "none found in the options, the environment or the usual files (the instance's metadata service, if any)".into()
    } else {
        found.join(", ")
    };
    match crate::cloud::aws_credential_source(url, options) {
        Some(Ok(source)) => format!("{listed}; would use {source}"),
        Some(Err(e)) => format!("{listed}; unusable: {e:#}"),
        None => listed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_placed_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::for_home(dir.path());
        let file = dir.path().join("c.toml");
        let at = |text: &str| {
            std::fs::write(&file, text).unwrap();
            check(Some(&file), &paths).unwrap_err()
        };
        let f = file.display();
        assert_eq!(
            at("[cache]\n\nmax_size = 12\n"),
            format!("{f}:3: invalid type: integer `12`, expected a string")
        );
        let e = at("[cache]\nmemory = \"1G\"\nmax_size = \"12 parsecs\"\n");
        assert!(
            e.starts_with(&format!(
                "{f}:3: cache.max_size: \"12 parsecs\" is not a size"
            )),
            "{e}"
        );
        let e = at(
            "[[remote]]\nname = \"a\"\nurl = \"memory://\"\n[[remote]]\nname = \"b\"\nurl = \"memory://\"\nttl = \"3 fortnights\"\n",
        );
        assert!(e.starts_with(&format!("{f}:7: remote \"b\": ttl:")), "{e}");
        let e = at("[k8s]\npod_uid = \"root\"\n");
        assert!(e.starts_with(&format!("{f}:2: k8s.pod_uid:")), "{e}");
    }

    #[test]
    fn targets_are_reported_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::for_home(dir.path());
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[[remote]]\nname = \"s3\"\nurl = \"s3://b/p\"\noptions = { region = \"eu-west-1\", secret_access_key = \"TOPSECRET\", access_key_id = \"AKIA\" }\nttl = \"14d\"\n\
             [[remote]]\nname = \"here\"\nurl = \"memory://\"\n",
        )
        .unwrap();
        let r = check(Some(&file), &paths).unwrap();
        assert!(r.contains("cloud/s3: s3://b/p; snapshots expire: 14d; credentials: option access_key_id, option secret_access_key"), "{r}");
        assert!(
            r.contains("cloud/here: memory://; snapshots expire: never; credentials: none needed"),
            "{r}"
        );
        assert!(!r.contains("TOPSECRET") && !r.contains("AKIA\""), "{r}");
    }
}
