//! `AppEntitlement` ↔ ConductorOne `/api/v1/apps/{app_id}/entitlements`.
//!
//! The spec's field names are the entity's JSON names, so the spec is compared with the
//! entity field by field as JSON: every field the spec sets is managed, everything else
//! is left alone. Objects the operator creates carry the annotations `managed_by` and
//! `iac_resource_address`, which make crash-recovery lookups exact.

use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::api::{self, is_deleted};
use crate::api::AppEntitlement;
use crate::api::connection::UpstreamKind;
use crate::api::envelope::ManagementPolicy;
use std::collections::HashMap;

use crate::engine::{
    Created, Cx, Diff, ImportScope, ManagedObject, Provider, ScopeFlag, ScopeLister, Written,
};
use crate::providers::{segment, send_delete, single};
use crate::upstream::{Call, UpstreamClient, UpstreamError};

/// Annotation marking entitlements the operator created.
pub const MANAGED_BY: &str = "managed_by";
/// Annotation holding `<namespace>/<name>` of the resource that created the entitlement.
pub const IAC_RESOURCE_ADDRESS: &str = "iac_resource_address";
const MANAGED_BY_VALUE: &str = "accessplane";

/// Spec fields that are not entity fields, or that can only be set at create.
const NOT_UPDATABLE: &[&str] = &[
    "connectionRef",
    "managementPolicy",
    "deletionPolicy",
    "externalId",
    "appId",
    "appResourceTypeId",
    "appResourceId",
];
/// Entity fields the create request does not take: set by an update right after create.
const NOT_ON_CREATE: &[&str] = &[
    "deprovisionerPolicy",
    "requestSchemaId",
    "isManuallyManaged",
];
/// Id lists compared as sets.
const SET_FIELDS: &[&str] = &["complianceFrameworkValueIds"];

/// An entitlement as ConductorOne returns it (protobuf JSON: every field present), cut
/// down on arrival to the fields the spec manages and [`READ_FIELDS`], and kept as
/// compact JSON text: a List snapshot holds thousands of these, a parsed map costs
/// ~4 KiB each against ~0.6 KiB of text, and the fields are read only when compared.
#[derive(Clone, Debug, PartialEq)]
pub struct Entitlement {
    id: String,
    deleted: bool,
    json: Box<str>,
}

/// Entity fields read besides the managed [`FIELDS`].
const READ_FIELDS: &[&str] = &["systemBuiltin", "grantCount"];

/// An `appEntitlementView`, cut down to an [`Entitlement`] as each one is read: a List of a
/// whole app (thousands) never holds its entitlements as JSON trees at once.
#[derive(Deserialize)]
#[serde(from = "RawView")]
struct View(Entitlement);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawView {
    app_entitlement: Map<String, Value>,
}

impl From<RawView> for View {
    fn from(raw: RawView) -> Self {
        Self(Entitlement::from_upstream(raw.app_entitlement))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct One {
    app_entitlement_view: View,
}

impl Entitlement {
    fn from_upstream(mut entity: Map<String, Value>) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(String::from);
        let id = text(entity.get("id")).unwrap_or_default();
        let deleted = is_deleted(&text(entity.get("deletedAt")));
        entity.retain(|k, _| FIELDS.contains(&k.as_str()) || READ_FIELDS.contains(&k.as_str()));
        Self {
            id,
            deleted,
            json: Value::Object(entity).to_string().into_boxed_str(),
        }
    }

    /// The kept fields, parsed.
    fn entity(&self) -> Map<String, Value> {
        serde_json::from_str(&self.json).unwrap_or_default()
    }

    fn field(&self, name: &str) -> Value {
        self.entity().remove(name).unwrap_or(Value::Null)
    }

    fn id(&self) -> String {
        self.id.clone()
    }

    fn deleted(&self) -> bool {
        self.deleted
    }

    fn annotation(&self, key: &str) -> Option<String> {
        annotation(&self.entity(), key)
    }
}

fn annotation(entity: &Map<String, Value>, key: &str) -> Option<String> {
    let value = entity.get("annotations")?.get(key)?;
    value.as_str().map(String::from)
}

fn created_by_us(entity: &Map<String, Value>) -> bool {
    annotation(entity, MANAGED_BY).as_deref() == Some(MANAGED_BY_VALUE)
}

/// The `AppEntitlement` provider.
#[derive(Default)]
pub struct AppEntitlementProvider;

fn collection(app_id: &str) -> String {
    format!("api/v1/apps/{}/entitlements", segment(app_id))
}

fn item(app_id: &str, id: &str) -> String {
    format!("{}/{}", collection(app_id), segment(id))
}

fn address(obj: &AppEntitlement) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The spec's entity fields as JSON (camelCase, omitted fields absent).
fn desired(obj: &AppEntitlement, created_by_us: bool) -> Map<String, Value> {
    let Value::Object(mut spec) = serde_json::to_value(&obj.spec).expect("spec serializes") else {
        unreachable!("a spec is an object")
    };
    spec.retain(|k, _| !NOT_UPDATABLE.contains(&k.as_str()));
    if created_by_us {
        let annotations = spec.entry("annotations").or_insert_with(|| json!({}));
        annotations[MANAGED_BY] = json!(MANAGED_BY_VALUE);
        annotations[IAC_RESOURCE_ADDRESS] = json!(address(obj));
    }
    spec
}

/// Whether a desired value matches the upstream one. Unset upstream values equal their
/// zero value; nested objects (oneof arms) compare the fields the spec sets.
fn matches(field: &str, want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::String(w), Value::Null) => w.is_empty(),
        (Value::Bool(w), Value::Null) => !w,
        (Value::Array(w), Value::Null) => w.is_empty(),
        (Value::String(w), Value::String(h)) if field == "durationGrant" => {
            seconds(w) == seconds(h)
        }
        (Value::Array(w), Value::Array(h)) if SET_FIELDS.contains(&field) => {
            let mut w: Vec<String> = w.iter().map(Value::to_string).collect();
            let mut h: Vec<String> = h.iter().map(Value::to_string).collect();
            w.sort();
            h.sort();
            w == h
        }
        (Value::Object(w), Value::Object(h)) if field == "annotations" => w == h,
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| matches(k, v, h.get(k).unwrap_or(&Value::Null))),
        (Value::Object(w), Value::Null) => w.is_empty() && field != "durationUnset",
        (w, h) => w == h,
    }
}

fn seconds(duration: &str) -> Option<f64> {
    duration.strip_suffix('s')?.parse().ok()
}

/// The entity body for a create request: `provisionerPolicy` is `provisionPolicy` there,
/// and the resource an entitlement belongs to can be given only here.
fn create_body(obj: &AppEntitlement) -> Value {
    let mut body = desired(obj, true);
    body.retain(|k, _| !NOT_ON_CREATE.contains(&k.as_str()));
    if let Some(policy) = body.remove("provisionerPolicy") {
        body.insert("provisionPolicy".into(), policy);
    }
    let spec = &obj.spec;
    for (field, value) in [
        ("appResourceTypeId", &spec.app_resource_type_id),
        ("appResourceId", &spec.app_resource_id),
    ] {
        if let Some(value) = value {
            body.insert(field.into(), json!(value));
        }
    }
    Value::Object(body)
}

impl Provider<AppEntitlement> for AppEntitlementProvider {
    type Observed = Entitlement;
    type Inputs = ();
    const UPSTREAM: UpstreamKind = UpstreamKind::ConductorOne;

    fn id_of(&self, observed: &Entitlement) -> String {
        observed.id()
    }

    async fn observe(
        &self,
        cx: &Cx<'_, AppEntitlement>,
        id: &str,
    ) -> Result<Option<Entitlement>, UpstreamError> {
        let call = Call::get("get_app_entitlement", item(&cx.obj.spec.app_id, id));
        let found: Option<One> = api::get_optional(cx.upstream, call).await?;
        Ok(found
            .map(|one| one.app_entitlement_view.0)
            .filter(|e| !e.deleted()))
    }

    /// Natural key: same app and display name; among those, the ones this resource's
    /// annotations point at. Recovering a create (or deleting one in flight) takes only
    /// those: every create of ours carries the annotations, so an entitlement without them
    /// existed before and is not ours to record or delete. Observing without an id also
    /// matches entitlements nobody marked, never one another resource created.
    async fn find(&self, cx: &Cx<'_, AppEntitlement>) -> Result<Vec<Entitlement>, UpstreamError> {
        let spec = &cx.obj.spec;
        let Some(display_name) = &spec.display_name else {
            return Ok(vec![]);
        };
        let body = Map::from_iter([
            ("appIds".to_string(), json!([spec.app_id])),
            ("displayName".to_string(), json!(display_name)),
        ]);
        let views: Vec<View> = api::search_all(
            cx.upstream,
            "search_app_entitlements",
            "api/v1/search/entitlements",
            body,
        )
        .await?;
        let found: Vec<Entitlement> = views
            .into_iter()
            .map(|View(e)| e)
            .filter(|e| !e.deleted())
            .collect();
        let me = address(cx.obj);
        let ours: Vec<Entitlement> = found
            .iter()
            .filter(|e| {
                e.annotation(MANAGED_BY).as_deref() == Some(MANAGED_BY_VALUE)
                    && e.annotation(IAC_RESOURCE_ADDRESS).as_deref() == Some(&me)
            })
            .cloned()
            .collect();
        let observing = cx.obj.managed().management() == ManagementPolicy::Observe;
        if !ours.is_empty() || !observing {
            return Ok(ours);
        }
        Ok(found
            .into_iter()
            .filter(|e| e.annotation(IAC_RESOURCE_ADDRESS).is_none())
            .collect())
    }

    /// Entitlements are listed per app.
    fn list_scope(&self, obj: &AppEntitlement) -> Option<String> {
        Some(obj.spec.app_id.to_string())
    }

    const LIST_PAGE_SIZE: usize = api::PAGE_SIZE;

    async fn list(
        &self,
        cx: &Cx<'_, AppEntitlement>,
        app_id: &str,
    ) -> Result<Vec<Entitlement>, UpstreamError> {
        let views: Vec<View> = api::list_all(
            cx.upstream,
            "list_app_entitlements",
            &collection(app_id),
            "list",
        )
        .await?;
        Ok(views
            .into_iter()
            .map(|View(e)| e)
            .filter(|e| !e.deleted())
            .collect())
    }

    fn observed_value(&self, observed: &Entitlement, field: &str) -> Option<Value> {
        Some(observed.field(field))
    }

    fn diff(&self, cx: &Cx<'_, AppEntitlement>, observed: &Entitlement) -> Diff {
        let entity = observed.entity();
        let mut diff = Diff::default();
        for (field, want) in desired(cx.obj, created_by_us(&entity)) {
            // The field names are the spec's own, which are static strings of the API types.
            let name = FIELDS
                .iter()
                .find(|f| **f == field)
                .copied()
                .unwrap_or("unknown");
            let have = entity.get(&field).unwrap_or(&Value::Null);
            diff.check(name, !matches(&field, &want, have));
        }
        diff
    }

    /// The create body as stored: fields a create cannot take (the deprovisioner policy)
    /// are then set by the update the reconciler sends right after.
    async fn created_state(
        &self,
        cx: &Cx<'_, AppEntitlement>,
    ) -> Result<Option<Entitlement>, UpstreamError> {
        let Value::Object(mut entity) = create_body(cx.obj) else {
            return Ok(None);
        };
        if let Some(policy) = entity.remove("provisionPolicy") {
            entity.insert("provisionerPolicy".into(), policy);
        }
        entity.insert("id".into(), json!(crate::engine::plan::CREATED_ID));
        Ok(Some(Entitlement::from_upstream(entity)))
    }

    fn create_calls(&self, cx: &Cx<'_, AppEntitlement>) -> Vec<Call> {
        vec![
            Call::post("create_app_entitlement", collection(&cx.obj.spec.app_id))
                .json(create_body(cx.obj)),
        ]
    }

    async fn create(
        &self,
        cx: &Cx<'_, AppEntitlement>,
        calls: Vec<Call>,
    ) -> Result<Created<Entitlement>, UpstreamError> {
        let one: One = cx.upstream.json(single(calls)).await?;
        Ok(Created::Done(one.app_entitlement_view.0))
    }

    async fn update(
        &self,
        cx: &Cx<'_, AppEntitlement>,
        _observed: &Entitlement,
        _diff: &Diff,
        calls: Vec<Call>,
    ) -> Result<Written<Entitlement>, UpstreamError> {
        let one: One = cx.upstream.json(single(calls)).await?;
        Ok(Written::Done(Some(one.app_entitlement_view.0)))
    }

    fn update_calls(
        &self,
        cx: &Cx<'_, AppEntitlement>,
        observed: &Entitlement,
        diff: &Diff,
    ) -> Vec<Call> {
        let desired = desired(cx.obj, created_by_us(&observed.entity()));
        // The id travels in the path: the API marks `entitlement.id` readOnly.
        let mut entity = Map::from_iter([("appId".to_string(), json!(cx.obj.spec.app_id))]);
        for field in &diff.fields {
            entity.insert(
                (*field).into(),
                desired.get(*field).cloned().unwrap_or(Value::Null),
            );
        }
        let mut body = json!({"entitlement": entity, "updateMask": api::update_mask(&diff.fields)});
        if let Some(flag) = desired
            .get("overrideAccessRequestsDefaults")
            .filter(|_| diff.fields.contains(&"overrideAccessRequestsDefaults"))
        {
            body["overrideAccessRequestsDefaults"] = flag.clone();
        }
        // An update with a mask is a full overwrite of those fields: repeating it is safe.
        vec![
            Call::post(
                "update_app_entitlement",
                item(&cx.obj.spec.app_id, &observed.id()),
            )
            .json(body)
            .idempotent(),
        ]
    }

    fn delete_calls(&self, cx: &Cx<'_, AppEntitlement>, id: &str) -> Vec<Call> {
        vec![api::delete_call(
            "delete_app_entitlement",
            item(&cx.obj.spec.app_id, id),
        )]
    }

    async fn delete(
        &self,
        cx: &Cx<'_, AppEntitlement>,
        calls: Vec<Call>,
    ) -> Result<Written<()>, UpstreamError> {
        send_delete(cx.upstream, calls).await?;
        Ok(Written::Done(None))
    }

    fn refuse_update(&self, observed: &Entitlement) -> Option<String> {
        (observed.field("systemBuiltin") == Value::Bool(true)).then(|| {
            format!(
                "app entitlement {} is built into ConductorOne and cannot be managed",
                observed.id()
            )
        })
    }

    fn refuse_delete(&self, observed: &Entitlement) -> Option<String> {
        self.refuse_update(observed)
    }

    fn allowed_scope_of(&self, obj: &AppEntitlement, _inputs: Option<&()>) -> Option<String> {
        Some(obj.spec.app_id.to_string())
    }

    const IMPORT_SCOPE: &'static [ScopeFlag] = &[ScopeFlag {
        flag: "app",
        field: "appId",
    }];
    const IMPORTED_FIELDS: &'static [&'static str] = FIELDS;

    const IMPORT_SCOPE_LISTER: Option<ScopeLister> = Some(super::import::app_scopes);

    async fn import_exclusions(
        &self,
        upstream: &UpstreamClient,
        scope: &ImportScope,
    ) -> Result<HashMap<String, String>, UpstreamError> {
        match scope.get("appId") {
            Some(app) => super::import::toolset_entitlements(upstream, app).await,
            None => Ok(HashMap::new()),
        }
    }

    fn display_name(&self, observed: &Entitlement) -> Option<String> {
        observed.field("displayName").as_str().map(String::from)
    }

    fn facts(&self, _cx: &Cx<'_, AppEntitlement>, observed: &Entitlement) -> Map<String, Value> {
        let grant_count = api::int64(&observed.field("grantCount"));
        Map::from_iter([("grantCount".to_string(), json!(grant_count))])
    }
}

/// Every entity field the spec can manage (static names for update masks).
const FIELDS: &[&str] = &[
    "displayName",
    "description",
    "alias",
    "slug",
    "purpose",
    "grantPolicyId",
    "revokePolicyId",
    "certifyPolicyId",
    "emergencyGrantEnabled",
    "emergencyGrantPolicyId",
    "riskLevelValueId",
    "complianceFrameworkValueIds",
    "durationGrant",
    "durationUnset",
    "provisionerPolicy",
    "deprovisionerPolicy",
    "requestSchemaId",
    "matchBatonId",
    "overrideAccessRequestsDefaults",
    "isManuallyManaged",
    "annotations",
];

#[cfg(test)]
mod tests;
