//! `Connector` ↔ ConductorOne `/api/v1/apps/{app_id}/connectors`.
//!
//! Managed fields are the ones the spec sets among `displayName`, `description`,
//! `userIds`, `profileAllowList`, `profileIgnoreList` (lists compared as sets) and
//! `config`. The config comes from a Secret and is write-only upstream, so it cannot be
//! compared: a keyed hash of the Secret's content is kept in `status.configHash` and the
//! config is re-sent (mask `config`) only when that hash changes. It is not part of the
//! create request: the engine's diff right after create sends it.
//!
//! Connectors carry no annotations, so crash recovery matches by display name (and
//! catalog id when set): if other connectors of the app share the display name, an
//! interrupted create stops as `CreateAmbiguous` instead of guessing.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::api::{self, is_deleted};
use crate::api::Connector;
use crate::api::connection::UpstreamKind;
use crate::api::envelope::ManagementPolicy;
use crate::engine::{Created, Cx, Diff, EngineError, Provider, ScopeFlag, ScopeLister, Written};
use crate::providers::{segment, send_delete, single};
use crate::upstream::{Call, UpstreamError};

/// The update-mask name of the configuration.
const CONFIG: &str = "config";
/// Spec fields the create request takes (the rest is set by the update after create).
const CREATE_FIELDS: &[&str] = &["catalogId", "displayName", "description", "userIds"];
/// The protobuf `Any` type of a configuration given as key/value pairs.
const ENV_CONFIG_TYPE: &str = "type.googleapis.com/c1.api.app.v1.EnvConfig";

/// A connector `C` as ConductorOne returns it (protobuf JSON: `null` means unset).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamConnector {
    #[serde(default)]
    id: String,
    catalog_id: Option<String>,
    display_name: Option<String>,
    description: Option<String>,
    user_ids: Option<Vec<String>>,
    profile_allow_list: Option<Vec<String>>,
    profile_ignore_list: Option<Vec<String>>,
    status: Option<SyncState>,
    deleted_at: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct SyncState {
    status: Option<String>,
    last_error: Option<String>,
}

#[derive(Deserialize)]
struct View {
    connector: UpstreamConnector,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct One {
    connector_view: View,
}

/// The configuration from `spec.configSecretRef`. Values are held as secrets and only
/// exposed to build the request body; the hash identifies the content in status.
pub struct ConnectorConfig {
    entries: BTreeMap<String, SecretString>,
    hash: String,
}

impl ConnectorConfig {
    /// Every Secret key becomes a configuration field; values must be UTF-8 text (the
    /// error names the offending key, never a value). `secret_uid` keys the hash.
    fn from_secret(secret_uid: &str, data: &BTreeMap<String, ByteString>) -> Result<Self, String> {
        let hash = config_hash(
            secret_uid,
            data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
        );
        let mut entries = BTreeMap::new();
        for (key, value) in data {
            let text = String::from_utf8(value.0.clone()).map_err(|_| key.clone())?;
            entries.insert(key.clone(), SecretString::from(text));
        }
        Ok(Self { entries, hash })
    }

    /// The protobuf `Any` ConductorOne takes as `config`.
    fn to_any(&self) -> Value {
        let configuration: Map<String, Value> = self
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), json!({"stringValue": v.expose_secret()})))
            .collect();
        json!({"@type": ENV_CONFIG_TYPE, "configuration": configuration})
    }
}

/// HMAC-SHA256 (hex) over the key/value pairs sorted by key, each part length-prefixed
/// so that no two different contents share an encoding. Keyed with the Secret's uid:
/// status is readable by more people than the Secret, and a plain hash of a low-entropy
/// value (a short token, a URL) would let them test guesses offline; the uid is known
/// only to those who can read the Secret. A recreated Secret re-sends the config once.
fn config_hash<'a>(
    secret_uid: &str,
    entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> String {
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_uid.as_bytes())
        .expect("HMAC takes keys of any length");
    for (key, value) in entries {
        for part in [key.as_bytes(), value] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The `Connector` provider.
#[derive(Default)]
pub struct ConnectorProvider;

fn collection(app_id: &str) -> String {
    format!("api/v1/apps/{}/connectors", segment(app_id))
}

fn item(app_id: &str, id: &str) -> String {
    format!("{}/{}", collection(app_id), segment(id))
}

/// The spec as JSON: its field names are the connector's, omitted fields are absent.
fn spec_fields(obj: &Connector) -> Map<String, Value> {
    let Value::Object(spec) = serde_json::to_value(&obj.spec).expect("spec serializes") else {
        unreachable!("a spec is an object")
    };
    spec
}

fn text_differs(want: &Option<String>, have: &Option<String>) -> bool {
    want.as_ref()
        .is_some_and(|w| w != have.as_deref().unwrap_or_default())
}

fn set_differs(want: &Option<Vec<String>>, have: &Option<Vec<String>>) -> bool {
    want.as_ref()
        .is_some_and(|w| !api::same_set(w, have.as_deref().unwrap_or_default()))
}

/// The hash of the configuration last sent, as recorded in status.
fn sent_config_hash(obj: &Connector) -> Option<&str> {
    obj.status.as_ref()?.config_hash.as_deref()
}

/// The Secret the configuration comes from (a change to it must reconcile the connector).
fn config_secret(obj: &Connector) -> Vec<String> {
    obj.spec
        .config_secret_ref
        .iter()
        .map(|r| r.name.clone())
        .map(String::from)
        .collect()
}

/// `null` for the empty strings protobuf JSON uses for "unset".
fn non_empty(text: Option<String>) -> Value {
    json!(text.filter(|t| !t.is_empty()))
}

impl Provider<Connector> for ConnectorProvider {
    type Observed = UpstreamConnector;
    type Inputs = Option<ConnectorConfig>;
    const UPSTREAM: UpstreamKind = UpstreamKind::ConductorOne;

    fn id_of(&self, observed: &UpstreamConnector) -> String {
        observed.id.clone()
    }

    const SECRET_REFS: Option<fn(&Connector) -> Vec<String>> = Some(config_secret);

    async fn resolve(
        &self,
        kube: &kube::Client,
        obj: &Connector,
    ) -> Result<Option<ConnectorConfig>, EngineError> {
        // Deleting needs no config: a Secret deleted along with the resource must not block it.
        if obj.meta().deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(secret_ref) = &obj.spec.config_secret_ref else {
            return Ok(None);
        };
        let (ns, name) = (obj.namespace().unwrap_or_default(), &secret_ref.name);
        let secret = Api::<Secret>::namespaced(kube.clone(), &ns)
            .get_opt(name)
            .await
            .map_err(|e| match e {
                // The least-privilege install reads no Secret outside its credentials
                // namespace: say so instead of retrying a 403 as a passing fault.
                kube::Error::Api(status) if status.code == 403 => EngineError::Dependency(format!(
                    "Secret {ns}/{name} (spec.configSecretRef) cannot be read: the operator may not read Secrets in namespace {ns} (secrets scope credentialsNamespace)"
                )),
                e => EngineError::kube("reading the connector config Secret")(e),
            })?
            .ok_or_else(|| {
                EngineError::Dependency(format!(
                    "Secret {ns}/{name} (spec.configSecretRef) does not exist"
                ))
            })?;
        let uid = secret.metadata.uid.clone().unwrap_or_default();
        ConnectorConfig::from_secret(&uid, &secret.data.unwrap_or_default())
            .map(Some)
            .map_err(|key| {
                EngineError::Dependency(format!(
                    "Secret {ns}/{name} (spec.configSecretRef): the value of key {key} is not UTF-8 text"
                ))
            })
    }

    async fn observe(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
        id: &str,
    ) -> Result<Option<UpstreamConnector>, UpstreamError> {
        let call = Call::get("get_connector", item(&cx.obj.spec.app_id, id));
        let found: Option<One> = api::get_optional(cx.upstream, call).await?;
        Ok(found
            .map(|one| one.connector_view.connector)
            .filter(|c| !is_deleted(&c.deleted_at)))
    }

    /// Natural key: same app and display name, and the same catalog entry when set.
    async fn find(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
    ) -> Result<Vec<UpstreamConnector>, UpstreamError> {
        let spec = &cx.obj.spec;
        let Some(display_name) = &spec.display_name else {
            return Ok(vec![]);
        };
        let views: Vec<View> = api::list_all(
            cx.upstream,
            "list_connectors",
            &collection(&spec.app_id),
            "list",
        )
        .await?;
        Ok(views
            .into_iter()
            .map(|v| v.connector)
            .filter(|c| !is_deleted(&c.deleted_at))
            .filter(|c| c.display_name.as_ref() == Some(display_name))
            .filter(|c| {
                spec.catalog_id
                    .as_ref()
                    .is_none_or(|id| c.catalog_id.as_ref() == Some(id))
            })
            .collect())
    }

    /// Connectors are listed per app.
    fn list_scope(&self, obj: &Connector) -> Option<String> {
        Some(obj.spec.app_id.to_string())
    }

    const LIST_PAGE_SIZE: usize = api::PAGE_SIZE;

    async fn list(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
        app_id: &str,
    ) -> Result<Vec<UpstreamConnector>, UpstreamError> {
        let views: Vec<View> =
            api::list_all(cx.upstream, "list_connectors", &collection(app_id), "list").await?;
        Ok(views
            .into_iter()
            .map(|v| v.connector)
            .filter(|c| !is_deleted(&c.deleted_at))
            .collect())
    }

    fn diff(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
        observed: &UpstreamConnector,
    ) -> Diff {
        let spec = &cx.obj.spec;
        let mut diff = Diff::default();
        diff.check(
            "displayName",
            text_differs(&spec.display_name, &observed.display_name),
        );
        diff.check(
            "description",
            text_differs(&spec.description, &observed.description),
        );
        diff.check(
            "profileAllowList",
            set_differs(&spec.profile_allow_list, &observed.profile_allow_list),
        );
        diff.check(
            "profileIgnoreList",
            set_differs(&spec.profile_ignore_list, &observed.profile_ignore_list),
        );
        diff.check("userIds", set_differs(&spec.user_ids, &observed.user_ids));
        // Write-only upstream: compared by the hash of what was last sent.
        diff.check(
            CONFIG,
            cx.inputs
                .as_ref()
                .is_some_and(|c| Some(c.hash.as_str()) != sent_config_hash(cx.obj)),
        );
        diff
    }

    /// The connector's fields; never the configuration (not read back, and secret).
    fn observed_value(&self, observed: &UpstreamConnector, field: &str) -> Option<Value> {
        crate::providers::field_of(observed, field)
    }

    /// The create body as stored: the configuration (and the profile lists) are then
    /// set by the update the reconciler sends right after.
    async fn created_state(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
    ) -> Result<Option<UpstreamConnector>, UpstreamError> {
        let body = self.create_calls(cx).pop().and_then(|call| call.body);
        let created = body.and_then(|b| serde_json::from_value::<UpstreamConnector>(b).ok());
        Ok(created.map(|mut created| {
            created.id = crate::engine::plan::CREATED_ID.into();
            created
        }))
    }

    fn create_calls(&self, cx: &Cx<'_, Connector, Option<ConnectorConfig>>) -> Vec<Call> {
        let mut body = spec_fields(cx.obj);
        body.retain(|k, _| CREATE_FIELDS.contains(&k.as_str()));
        vec![
            Call::post("create_connector", collection(&cx.obj.spec.app_id))
                .json(Value::Object(body)),
        ]
    }

    async fn create(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
        calls: Vec<Call>,
    ) -> Result<Created<UpstreamConnector>, UpstreamError> {
        let one: One = cx.upstream.json(single(calls)).await?;
        Ok(Created::Done(one.connector_view.connector))
    }

    async fn update(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
        _observed: &UpstreamConnector,
        _diff: &Diff,
        calls: Vec<Call>,
    ) -> Result<Written<UpstreamConnector>, UpstreamError> {
        let one: One = cx.upstream.json(single(calls)).await?;
        Ok(Written::Done(Some(one.connector_view.connector)))
    }

    /// The configuration goes in only when it differs, and its values are redacted from
    /// any error the upstream answers with.
    fn update_calls(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
        observed: &UpstreamConnector,
        diff: &Diff,
    ) -> Vec<Call> {
        let app_id = &cx.obj.spec.app_id;
        let spec = spec_fields(cx.obj);
        let mut entity = Map::from_iter([
            ("id".to_string(), json!(observed.id)),
            ("appId".to_string(), json!(app_id)),
        ]);
        for field in &diff.fields {
            let value = if *field == CONFIG {
                json!(cx.inputs.as_ref().map(ConnectorConfig::to_any))
            } else {
                spec.get(*field).cloned().unwrap_or(Value::Null)
            };
            entity.insert((*field).into(), value);
        }
        let mut call = api::masked_update(
            "update_connector",
            item(app_id, &observed.id),
            "connector",
            entity,
            &diff.fields,
        );
        if let (true, Some(config)) = (diff.fields.contains(&CONFIG), &cx.inputs) {
            call = call.redacting(config.entries.values().cloned().collect());
        }
        vec![call]
    }

    fn delete_calls(&self, cx: &Cx<'_, Connector, Option<ConnectorConfig>>, id: &str) -> Vec<Call> {
        vec![api::delete_call(
            "delete_connector",
            item(&cx.obj.spec.app_id, id),
        )]
    }

    async fn delete(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
        calls: Vec<Call>,
    ) -> Result<Written<()>, UpstreamError> {
        send_delete(cx.upstream, calls).await?;
        Ok(Written::Done(None))
    }

    fn allowed_scope_of(
        &self,
        obj: &Connector,
        _inputs: Option<&Option<ConnectorConfig>>,
    ) -> Option<String> {
        Some(obj.spec.app_id.to_string())
    }

    const IMPORT_SCOPE: &'static [ScopeFlag] = &[ScopeFlag {
        flag: "app",
        field: "appId",
    }];
    const IMPORTED_FIELDS: &'static [&'static str] = &[
        "displayName",
        "description",
        "userIds",
        "profileAllowList",
        "profileIgnoreList",
    ];

    const IMPORT_SCOPE_LISTER: Option<ScopeLister> = Some(super::import::app_scopes);

    fn display_name(&self, observed: &UpstreamConnector) -> Option<String> {
        observed.display_name.clone()
    }

    fn import_note(&self) -> Option<&'static str> {
        Some(
            "spec.configSecretRef is not imported: ConductorOne never returns a connector's configuration, so it stays unmanaged until a Secret is named here.",
        )
    }

    fn facts(
        &self,
        cx: &Cx<'_, Connector, Option<ConnectorConfig>>,
        observed: &UpstreamConnector,
    ) -> Map<String, Value> {
        let sync = observed.status.clone().unwrap_or_default();
        let mut facts = Map::from_iter([
            ("syncStatus".to_string(), non_empty(sync.status)),
            ("lastError".to_string(), non_empty(sync.last_error)),
        ]);
        // Observe never sends the config, so it keeps the hash of what was last sent.
        if cx.obj.spec.managed.management() == ManagementPolicy::Manage {
            facts.insert(
                "configHash".to_string(),
                json!(cx.inputs.as_ref().map(|c| &c.hash)),
            );
        }
        facts
    }
}

#[cfg(test)]
mod tests;
