//! Secrets: `stringData` is folded into base64 `data` on every write, as the API server's
//! conversion does (it is write-only and never stored), `data` must be base64 under valid keys,
//! `type` defaults to `Opaque`, and an immutable Secret keeps its data.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::meta;
use crate::resources::SECRETS;

/// The API server's wording for a key that is not a valid config key.
const KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Merges `stringData` into `data` (a `stringData` key wins), checks `data`, defaults `type`.
pub(super) fn normalize(obj: &mut Value) -> Result<(), ApiError> {
    let name = meta::name(obj).to_string();
    let map = meta::object_mut(obj);
    let strings = map.remove("stringData");
    let mut data: Map<String, Value> = match map.remove("data") {
        Some(Value::Object(data)) => data,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(undecodable("data must be an object")),
    };
    for (key, value) in data.iter() {
        let encoded = value.as_str().unwrap_or("");
        if let Err(e) = STANDARD.decode(encoded) {
            return Err(undecodable(&describe(&e)));
        }
        if !valid_key(key) {
            return Err(invalid_key(&name, "data", key));
        }
    }
    if let Some(Value::Object(strings)) = strings {
        for (key, value) in strings {
            if !valid_key(&key) {
                return Err(invalid_key(&name, "stringData", &key));
            }
            let plain = value.as_str().unwrap_or("");
            data.insert(key, json!(STANDARD.encode(plain)));
        }
    }
    if !data.is_empty() {
        map.insert("data".into(), Value::Object(data));
    }
    let typed = map
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if !typed {
        map.insert("type".into(), json!("Opaque"));
    }
    Ok(())
}

/// What an update may not change: the type, and the data of an immutable Secret.
pub(super) fn check_update(old: &Value, new: &Value) -> Result<(), ApiError> {
    let name = meta::name(new);
    let mut causes = Vec::new();
    if old.get("type") != new.get("type") {
        causes.push((
            "type".to_string(),
            format!(
                "Invalid value: {}: field is immutable",
                new.get("type").cloned().unwrap_or(Value::Null)
            ),
        ));
    }
    if old.get("immutable") == Some(&json!(true)) {
        let forbidden = "Forbidden: field is immutable when `immutable` is set".to_string();
        if old.get("data") != new.get("data") {
            causes.push(("data".into(), forbidden.clone()));
        }
        if new.get("immutable") != Some(&json!(true)) {
            causes.push(("immutable".into(), forbidden));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&SECRETS, name, &causes))
    }
}

fn describe(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => {
            format!("illegal base64 data at input byte {at}")
        }
        _ => format!("illegal base64 data: {e}"),
    }
}

/// The 400 a body gets when it does not decode into a Secret.
fn undecodable(why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Secret in version \"v1\" cannot be handled as a Secret: {why}"
    ))
}

fn invalid_key(name: &str, field: &str, key: &str) -> ApiError {
    ApiError::invalid(
        &SECRETS,
        name,
        &[(
            format!("{field}[{key}]"),
            format!("Invalid value: {key:?}: {KEY_MESSAGE}"),
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_folded_into_data() {
        let mut s = json!({"metadata": {"name": "s"}, "data": {"a": "YQ==", "b": "Yg=="},
                           "stringData": {"b": "bee", "c": "sea"}});
        normalize(&mut s).unwrap();
        assert_eq!(
            s,
            json!({"metadata": {"name": "s"}, "type": "Opaque",
                   "data": {"a": "YQ==", "b": "YmVl", "c": "c2Vh"}})
        );
    }

    #[test]
    fn bad_data_is_refused() {
        let mut s = json!({"metadata": {"name": "s"}, "data": {"a": "!!"}});
        let e = normalize(&mut s).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("illegal base64 data at input byte 0"),
            "{}",
            e.message
        );
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"a b": "x"}});
        assert_eq!(normalize(&mut s).unwrap_err().code, 422);
    }

    #[test]
    fn immutable_secrets_keep_their_data() {
        let old = json!({"metadata": {"name": "s"}, "type": "Opaque", "immutable": true,
                         "data": {"a": "YQ=="}});
        let mut new = old.clone();
        new["data"]["a"] = json!("Yg==");
        let e = check_update(&old, &new).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("data: Forbidden"), "{}", e.message);
        assert!(check_update(&old, &old).is_ok());
    }
}
