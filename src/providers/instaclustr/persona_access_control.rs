//! `PersonaAccessControl` ↔ Instaclustr MCP Gateway persona access controls.
//!
//! Writes answer 202/204 and complete later: create/update/delete report `Accepted` and
//! the engine confirms them by reading back. Ids are deterministic
//! (`<virtualServerId>_<personaRole>`), so no crash-recovery lookup is needed. All
//! controls of one gateway cluster come from one List call, which the engine shares
//! between the objects it is observing at the same time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::PersonaAccessControl;
use crate::api::connection::UpstreamKind;
use crate::api::persona_access_control::AccessControlType;
use crate::engine::{Created, Cx, Diff, EngineError, Provider, ScopeFlag, Written};
use crate::providers::{Deleted, segment, send_delete, single};
use crate::upstream::{Call, UpstreamError};

const CONTROLS: &str =
    "cluster-management/v2/resources/applications/mcp-gateway/persona-access-controls/v1";
const RUNNING: &str = "RUNNING";
const NO_OPERATION: &str = "NO_OPERATION";
const OPERATION_FAILED: &str = "OPERATION_FAILED";
/// A gateway cluster's state is re-read at most this often, however many controls wait on it.
const CLUSTER_STATE_TTL: Duration = Duration::from_secs(2);

/// A persona access control as the gateway shows it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Control {
    pub id: String,
    pub cluster_id: Option<String>,
    pub virtual_server_id: String,
    pub persona_role: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub tools: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterState {
    #[serde(default)]
    status: String,
    #[serde(default)]
    current_cluster_operation_status: String,
}

/// The `PersonaAccessControl` provider.
#[derive(Default)]
pub struct PersonaAccessControlProvider {
    clusters: Mutex<HashMap<String, (Instant, ClusterState)>>,
    /// Held while a cluster's state is read, so that writes waiting on it share one read.
    reading: tokio::sync::Mutex<()>,
}

fn type_name(t: AccessControlType) -> &'static str {
    match t {
        AccessControlType::Allowlist => "ALLOWLIST",
        AccessControlType::Denylist => "DENYLIST",
    }
}

fn control_path(id: &str) -> String {
    format!("{CONTROLS}/{}", segment(id))
}

/// The full desired body; unmanaged `tools` keep their observed value (PUT replaces).
fn body(obj: &PersonaAccessControl, observed: Option<&Control>) -> Value {
    let spec = &obj.spec;
    let tools = spec
        .tools
        .clone()
        .or_else(|| observed.and_then(|o| o.tools.clone()))
        .unwrap_or_default();
    json!({
        "virtualServerId": spec.virtual_server_id,
        "personaRole": spec.persona_role,
        "type": type_name(spec.type_),
        "tools": tools,
    })
}

impl PersonaAccessControlProvider {
    async fn cluster_state(
        &self,
        cx: &Cx<'_, PersonaAccessControl>,
    ) -> Result<ClusterState, UpstreamError> {
        let cluster = &cx.obj.spec.cluster_id;
        let cached = || {
            self.clusters
                .lock()
                .unwrap()
                .get(cluster.as_str())
                .filter(|(at, _)| at.elapsed() < CLUSTER_STATE_TTL)
                .map(|(_, state)| state.clone())
        };
        if let Some(state) = cached() {
            return Ok(state);
        }
        let _reading = self.reading.lock().await;
        if let Some(state) = cached() {
            return Ok(state);
        }
        let path = format!(
            "cluster-management/v2/resources/applications/mcp-gateway/clusters/v1/{}",
            segment(cluster)
        );
        let state: ClusterState = cx
            .upstream
            .json(Call::get("get_gateway_cluster", path))
            .await?;
        self.clusters
            .lock()
            .unwrap()
            .insert(cluster.to_string(), (Instant::now(), state.clone()));
        Ok(state)
    }
}

impl Provider<PersonaAccessControl> for PersonaAccessControlProvider {
    type Observed = Control;
    type Inputs = ();
    const UPSTREAM: UpstreamKind = UpstreamKind::Instaclustr;

    fn id_of(&self, observed: &Control) -> String {
        observed.id.clone()
    }

    fn deterministic_id(&self, obj: &PersonaAccessControl) -> Option<String> {
        Some(format!(
            "{}_{}",
            obj.spec.virtual_server_id, obj.spec.persona_role
        ))
    }

    async fn observe(
        &self,
        cx: &Cx<'_, PersonaAccessControl>,
        id: &str,
    ) -> Result<Option<Control>, UpstreamError> {
        match cx
            .upstream
            .json(Call::get("get_persona_access_control", control_path(id)))
            .await
        {
            Ok(control) => Ok(Some(control)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn find(
        &self,
        _cx: &Cx<'_, PersonaAccessControl>,
    ) -> Result<Vec<Control>, UpstreamError> {
        Ok(vec![])
    }

    fn list_scope(&self, obj: &PersonaAccessControl) -> Option<String> {
        Some(obj.spec.cluster_id.to_string())
    }

    async fn list(
        &self,
        cx: &Cx<'_, PersonaAccessControl>,
        scope: &str,
    ) -> Result<Vec<Control>, UpstreamError> {
        let path = format!(
            "cluster-management/v2/data-sources/mcp_gateway_cluster/{}/persona-access-controls/v1",
            segment(scope)
        );
        cx.upstream
            .json(Call::get("list_persona_access_controls", path))
            .await
    }

    fn allowed_scope_of(&self, obj: &PersonaAccessControl, _inputs: Option<&()>) -> Option<String> {
        Some(obj.spec.cluster_id.to_string())
    }

    const IMPORT_SCOPE: &'static [ScopeFlag] = &[ScopeFlag {
        flag: "cluster",
        field: "clusterId",
    }];
    const IMPORTED_FIELDS: &'static [&'static str] =
        &["virtualServerId", "personaRole", "type", "tools"];

    /// A control is named by its virtual server and role, which listing never reads.
    fn import_stand_in(&self) -> Map<String, Value> {
        Map::from_iter([
            (
                "virtualServerId".into(),
                json!("00000000-0000-0000-0000-000000000000"),
            ),
            ("personaRole".into(), json!("import")),
            ("type".into(), json!("ALLOWLIST")),
        ])
    }

    fn display_name(&self, observed: &Control) -> Option<String> {
        Some(observed.persona_role.clone())
    }

    fn observed_value(&self, observed: &Control, field: &str) -> Option<Value> {
        crate::providers::field_of(observed, field)
    }

    fn diff(&self, cx: &Cx<'_, PersonaAccessControl>, observed: &Control) -> Diff {
        let spec = &cx.obj.spec;
        let mut diff = Diff::default();
        diff.check("type", observed.type_ != type_name(spec.type_));
        diff.check(
            "tools",
            spec.tools.as_ref().is_some_and(|want| {
                let have = observed.tools.clone().unwrap_or_default();
                want.iter()
                    .map(|t| t.to_ascii_lowercase())
                    .collect::<BTreeSet<_>>()
                    != have.iter().map(|t| t.to_ascii_lowercase()).collect()
            }),
        );
        diff
    }

    fn create_calls(&self, cx: &Cx<'_, PersonaAccessControl>) -> Vec<Call> {
        vec![
            Call::post("create_persona_access_control", CONTROLS)
                .json(body(cx.obj, None))
                .answered_by(409),
        ]
    }

    fn update_calls(
        &self,
        cx: &Cx<'_, PersonaAccessControl>,
        observed: &Control,
        _diff: &Diff,
    ) -> Vec<Call> {
        vec![
            Call::put("update_persona_access_control", control_path(&observed.id))
                .json(body(cx.obj, Some(observed))),
        ]
    }

    async fn create(
        &self,
        cx: &Cx<'_, PersonaAccessControl>,
        calls: Vec<Call>,
    ) -> Result<Created<Control>, UpstreamError> {
        let id = self.deterministic_id(cx.obj).expect("deterministic");
        match cx.upstream.send(single(calls)).await {
            Ok(response) => {
                // Prefer the id the gateway reports, when the 202 body carries one.
                let reported = serde_json::from_slice::<Control>(&response.body)
                    .ok()
                    .map(|c| c.id)
                    .filter(|i| !i.is_empty());
                Ok(Created::Accepted {
                    id: reported.unwrap_or(id),
                })
            }
            // Already there: an earlier create of ours was accepted; read-back confirms it.
            Err(e) if e.status() == Some(409) => Ok(Created::Accepted { id }),
            Err(e) => Err(e),
        }
    }

    async fn update(
        &self,
        cx: &Cx<'_, PersonaAccessControl>,
        _observed: &Control,
        _diff: &Diff,
        calls: Vec<Call>,
    ) -> Result<Written<Control>, UpstreamError> {
        for call in calls {
            cx.upstream.send(call).await?;
        }
        Ok(Written::Accepted)
    }

    fn delete_calls(&self, _cx: &Cx<'_, PersonaAccessControl>, id: &str) -> Vec<Call> {
        vec![Call::delete(
            "delete_persona_access_control",
            control_path(id),
        )]
    }

    /// The gateway accepts a delete to apply it later (a 404: nothing was there).
    async fn delete(
        &self,
        cx: &Cx<'_, PersonaAccessControl>,
        calls: Vec<Call>,
    ) -> Result<Written<()>, UpstreamError> {
        Ok(match send_delete(cx.upstream, calls).await? {
            Deleted::Sent => Written::Accepted,
            Deleted::NotFound => Written::Done(None),
        })
    }

    /// No writes while the gateway cluster is busy or not running.
    async fn write_gate(&self, cx: &Cx<'_, PersonaAccessControl>) -> Result<(), EngineError> {
        let state = self.cluster_state(cx).await?;
        let cluster = &cx.obj.spec.cluster_id;
        if state.current_cluster_operation_status == OPERATION_FAILED {
            return Err(EngineError::DependencyFailed(format!(
                "MCP Gateway cluster {cluster}: its last operation failed (status {}); writes wait until it is RUNNING with NO_OPERATION",
                state.status
            )));
        }
        if state.status != RUNNING || state.current_cluster_operation_status != NO_OPERATION {
            // Re-read soon: the state is what we wait for.
            self.clusters.lock().unwrap().remove(cluster.as_str());
            return Err(EngineError::Dependency(format!(
                "MCP Gateway cluster {cluster} is {} with {}; writes wait until it is RUNNING with NO_OPERATION",
                state.status, state.current_cluster_operation_status
            )));
        }
        Ok(())
    }

    fn facts(&self, cx: &Cx<'_, PersonaAccessControl>, observed: &Control) -> Map<String, Value> {
        let cluster = observed
            .cluster_id
            .clone()
            .unwrap_or_else(|| cx.obj.spec.cluster_id.to_string());
        Map::from_iter([("clusterId".to_string(), json!(cluster))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::envelope::{ConnectionRef, ManagedFields};
    use crate::api::persona_access_control::PersonaAccessControlSpec;

    fn obj(tools: Option<Vec<&str>>) -> PersonaAccessControl {
        PersonaAccessControl::new(
            "p",
            PersonaAccessControlSpec {
                managed: ManagedFields {
                    connection_ref: ConnectionRef::local("ic"),
                    management_policy: None,
                    deletion_policy: None,
                    external_id: None,
                },
                cluster_id: "c".into(),
                virtual_server_id: "b2c3d4e5-f6a7-8901-bcde-f12345678901".into(),
                persona_role: "data analyst".into(),
                type_: AccessControlType::Allowlist,
                tools: tools.map(|t| t.into_iter().map(String::from).collect()),
            },
        )
    }

    fn diff(obj: &PersonaAccessControl, observed: &Control) -> Vec<&'static str> {
        let upstream = crate::providers::offline_client();
        PersonaAccessControlProvider::default()
            .diff(
                &Cx {
                    obj,
                    upstream: &upstream,
                    inputs: &(),
                },
                observed,
            )
            .fields
    }

    #[test]
    fn tools_compare_as_sets_and_omitted_tools_are_unmanaged() {
        let observed = Control {
            type_: "ALLOWLIST".into(),
            tools: Some(vec!["B".into(), "a".into()]),
            ..Default::default()
        };
        assert!(diff(&obj(Some(vec!["a", "b"])), &observed).is_empty());
        assert!(diff(&obj(None), &observed).is_empty());
        assert_eq!(diff(&obj(Some(vec![])), &observed), vec!["tools"]);
        // PUT replaces: unmanaged tools are re-sent as observed.
        assert_eq!(
            body(&obj(None), Some(&observed))["tools"],
            json!(["B", "a"])
        );
    }

    #[test]
    fn id_is_the_documented_composite() {
        let p = PersonaAccessControlProvider::default();
        assert_eq!(
            p.deterministic_id(&obj(None)).unwrap(),
            "b2c3d4e5-f6a7-8901-bcde-f12345678901_data analyst"
        );
        assert_eq!(
            control_path("b2c3_data analyst/x"),
            format!("{CONTROLS}/b2c3_data%20analyst%2Fx")
        );
    }
}
