//! Azure storage connection strings, which object_store does not read. Environment variables
//! (`AZURE_*`, `GOOGLE_*`) are read by object_store's `from_env` builders; a remote's
//! `options` override both. AWS credentials are `aws_chain`'s.

use std::collections::BTreeMap;

use anyhow::bail;
use object_store::azure::AzureConfigKey;

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
