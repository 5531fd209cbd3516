//! Protocol pieces every ConductorOne kind shares: paged lists, update masks, soft
//! deletes and 404-tolerant reads/deletes.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::saas::conductorone::PROVIDER;
use crate::upstream::{Call, UpstreamClient, UpstreamError};

/// The largest page ConductorOne serves: the fewest calls per list.
pub const PAGE_SIZE: usize = 100;

/// Reads every page of a list whose items sit under `key` (`list`, `profiles`, `bindings`, `tools`).
pub async fn list_all<T: DeserializeOwned>(
    client: &UpstreamClient,
    operation: &'static str,
    path: &str,
    key: &str,
) -> Result<Vec<T>, UpstreamError> {
    let mut items = vec![];
    let mut token = String::new();
    loop {
        let mut call = Call::get(operation, path).query("page_size", PAGE_SIZE.to_string());
        if !token.is_empty() {
            call = call.query("page_token", token.clone());
        }
        let mut page: Map<String, Value> = client.json(call).await?;
        if let Some(Value::Array(list)) = page.remove(key) {
            for item in list {
                items.push(
                    serde_json::from_value(item).map_err(|e| UpstreamError::Decode {
                        provider: PROVIDER,
                        operation,
                        message: e.to_string(),
                    })?,
                );
            }
        }
        match page.get("nextPageToken").and_then(Value::as_str) {
            Some(next) if !next.is_empty() && next != token => token = next.to_string(),
            _ => return Ok(items),
        }
    }
}

/// Paged search (`POST` with `pageSize`/`pageToken` in the body), items under `list`.
pub async fn search_all<T: DeserializeOwned>(
    client: &UpstreamClient,
    operation: &'static str,
    path: &str,
    mut body: Map<String, Value>,
) -> Result<Vec<T>, UpstreamError> {
    let mut items = vec![];
    loop {
        body.insert("pageSize".into(), Value::from(PAGE_SIZE));
        // A search reads; repeating it is harmless.
        let call = Call::post(operation, path)
            .json(Value::Object(body.clone()))
            .reads();
        let page: SearchPage<T> = client.json(call).await?;
        items.extend(page.list);
        match page.next_page_token {
            Some(next)
                if !next.is_empty()
                    && Some(&Value::from(next.clone())) != body.get("pageToken") =>
            {
                body.insert("pageToken".into(), Value::from(next));
            }
            _ => return Ok(items),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchPage<T> {
    #[serde(default = "Vec::new")]
    list: Vec<T>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// An update mask: the differing managed fields, comma-separated lowerCamelCase.
pub fn update_mask(fields: &[&str]) -> String {
    fields.join(",")
}

/// A masked update: `POST {"<entity_key>": entity, "updateMask": <fields>}`. It overwrites
/// exactly the masked fields, so repeating it is safe.
pub fn masked_update(
    operation: &'static str,
    path: String,
    entity_key: &str,
    entity: Map<String, Value>,
    fields: &[&str],
) -> Call {
    let body = Map::from_iter([
        (entity_key.to_string(), Value::Object(entity)),
        ("updateMask".to_string(), Value::from(update_mask(fields))),
    ]);
    Call::post(operation, path)
        .json(Value::Object(body))
        .idempotent()
}

/// `GET` that reads 404 as absent.
pub async fn get_optional<T: DeserializeOwned>(
    client: &UpstreamClient,
    call: Call,
) -> Result<Option<T>, UpstreamError> {
    match client.json(call).await {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `DELETE` with the `{}` body ConductorOne expects; 404 means already gone.
pub fn delete_call(operation: &'static str, path: String) -> Call {
    Call::delete(operation, path).json(Value::Object(Map::new()))
}

/// Soft-deleted objects come back with `deletedAt` set: they count as gone.
pub fn is_deleted(deleted_at: &Option<String>) -> bool {
    deleted_at.as_deref().is_some_and(|d| !d.is_empty())
}

/// A protobuf-JSON int64: a string on the wire, tolerated as a number.
pub fn int64(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Compares id lists as sets.
pub fn same_set(a: &[String], b: &[String]) -> bool {
    let a: std::collections::BTreeSet<&String> = a.iter().collect();
    let b: std::collections::BTreeSet<&String> = b.iter().collect();
    a == b
}
