//! `AccessProfile` ↔ Serval `/v2/access-profiles`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::access_profile::{
    AccessProfile, AccessProfileSpec, GroupCriteria, MatchingCriteria,
};
use crate::api::connection::UpstreamKind;
use crate::engine::{Created, Cx, Diff, Provider, ScopeFlag, Written};
use crate::providers::{segment, send_delete, single};
use crate::upstream::{Call, UpstreamError};

const MATCH_TYPE_UNSPECIFIED: &str = "ACCESS_PROFILE_GROUP_MATCH_TYPE_UNSPECIFIED";
/// The largest page the list endpoint serves: fewest calls per List.
const PAGE_SIZE: usize = 1000;

/// An access profile as Serval returns it. Missing fields read as empty.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServalProfile {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_team_default: bool,
    pub matching_criteria: Option<ObservedCriteria>,
    pub grants: Option<ObservedGrants>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ObservedCriteria {
    pub groups: Option<ObservedGroups>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedGroups {
    pub match_type: Option<String>,
    pub included_group_ids: Vec<String>,
    pub excluded_group_ids: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedGrants {
    pub app_resource_roles: Vec<ObservedRole>,
    pub workflows: Vec<ObservedWorkflow>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedRole {
    pub app_resource_role_id: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedWorkflow {
    pub workflow_id: String,
}

#[derive(Deserialize)]
struct One {
    data: ServalProfile,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    data: Vec<ServalProfile>,
    #[serde(default)]
    next_page_token: Option<String>,
}

impl ServalProfile {
    fn groups(&self) -> ObservedGroups {
        self.matching_criteria
            .as_ref()
            .and_then(|c| c.groups.clone())
            .unwrap_or_default()
    }

    fn grants(&self) -> ObservedGrants {
        self.grants.clone().unwrap_or_default()
    }
}

/// The `AccessProfile` provider.
#[derive(Default)]
pub struct AccessProfileProvider;

fn set<'a>(ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<&'a str> {
    ids.into_iter().map(String::as_str).collect()
}

/// `matchingCriteria` as sent: replace-all upstream, so sub-fields the spec leaves
/// out keep their observed values.
fn criteria_body(spec: &MatchingCriteria, observed: &ServalProfile) -> Value {
    let Some(groups) = &spec.groups else {
        return json!({});
    };
    let seen = observed.groups();
    json!({"groups": {
        "matchType": groups.match_type.clone().or(seen.match_type).unwrap_or_else(|| MATCH_TYPE_UNSPECIFIED.into()),
        "includedGroupIds": groups.included_group_ids.clone().unwrap_or(seen.included_group_ids),
        "excludedGroupIds": groups.excluded_group_ids.clone().unwrap_or(seen.excluded_group_ids),
    }})
}

fn grants_body(spec: &AccessProfileSpec, observed: &ServalProfile) -> Value {
    let seen = observed.grants();
    let grants = spec.grants.clone().unwrap_or_default();
    let roles: Vec<&String> = match &grants.app_resource_roles {
        Some(r) => r.iter().map(|r| &r.app_resource_role_id).collect(),
        None => seen
            .app_resource_roles
            .iter()
            .map(|r| &r.app_resource_role_id)
            .collect(),
    };
    let workflows: Vec<&String> = match &grants.workflows {
        Some(w) => w.iter().map(|w| &w.workflow_id).collect(),
        None => seen.workflows.iter().map(|w| &w.workflow_id).collect(),
    };
    json!({
        "appResourceRoles": roles.iter().map(|id| json!({"appResourceRoleId": id})).collect::<Vec<_>>(),
        "workflows": workflows.iter().map(|id| json!({"workflowId": id})).collect::<Vec<_>>(),
    })
}

fn groups_differ(spec: &GroupCriteria, seen: &ObservedGroups) -> bool {
    let match_type_differs = spec.match_type.as_deref().is_some_and(|m| {
        m != seen
            .match_type
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(MATCH_TYPE_UNSPECIFIED)
    });
    let included = spec
        .included_group_ids
        .as_ref()
        .is_some_and(|ids| set(ids) != set(&seen.included_group_ids));
    let excluded = spec
        .excluded_group_ids
        .as_ref()
        .is_some_and(|ids| set(ids) != set(&seen.excluded_group_ids));
    match_type_differs || included || excluded
}

fn grants_differ(spec: &AccessProfileSpec, observed: &ServalProfile) -> bool {
    let Some(grants) = &spec.grants else {
        return false;
    };
    let seen = observed.grants();
    let roles = grants.app_resource_roles.as_ref().is_some_and(|roles| {
        roles
            .iter()
            .map(|r| r.app_resource_role_id.as_str())
            .collect::<BTreeSet<_>>()
            != seen
                .app_resource_roles
                .iter()
                .map(|r| r.app_resource_role_id.as_str())
                .collect()
    });
    let workflows = grants.workflows.as_ref().is_some_and(|wfs| {
        wfs.iter()
            .map(|w| w.workflow_id.as_str())
            .collect::<BTreeSet<_>>()
            != seen
                .workflows
                .iter()
                .map(|w| w.workflow_id.as_str())
                .collect()
    });
    roles || workflows
}

fn profile_path(id: &str) -> String {
    format!("v2/access-profiles/{}", segment(id))
}

/// Every profile of a team, page by page.
async fn list_team(
    cx: &Cx<'_, AccessProfile>,
    team_id: &str,
) -> Result<Vec<ServalProfile>, UpstreamError> {
    let mut found = vec![];
    let mut token = String::new();
    loop {
        let mut call = Call::get("list_access_profiles", "v2/access-profiles")
            .query("teamId", team_id.to_string())
            .query("pageSize", PAGE_SIZE.to_string());
        if !token.is_empty() {
            call = call.query("pageToken", token.clone());
        }
        let page: Page = cx.upstream.json(call).await?;
        found.extend(page.data);
        match page.next_page_token {
            Some(next) if !next.is_empty() && next != token => token = next,
            _ => return Ok(found),
        }
    }
}

impl Provider<AccessProfile> for AccessProfileProvider {
    type Observed = ServalProfile;
    type Inputs = ();
    const UPSTREAM: UpstreamKind = UpstreamKind::Serval;

    fn id_of(&self, observed: &ServalProfile) -> String {
        observed.id.clone()
    }

    async fn observe(
        &self,
        cx: &Cx<'_, AccessProfile>,
        id: &str,
    ) -> Result<Option<ServalProfile>, UpstreamError> {
        match cx
            .upstream
            .json::<One>(Call::get("get_access_profile", profile_path(id)))
            .await
        {
            Ok(one) => Ok(Some(one.data)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Natural key: same team, same name.
    async fn find(&self, cx: &Cx<'_, AccessProfile>) -> Result<Vec<ServalProfile>, UpstreamError> {
        let Some(name) = &cx.obj.spec.name else {
            return Ok(vec![]);
        };
        let mut found = list_team(cx, &cx.obj.spec.team_id).await?;
        found.retain(|p| &p.name == name);
        Ok(found)
    }

    /// Profiles are listed per team.
    fn list_scope(&self, obj: &AccessProfile) -> Option<String> {
        Some(obj.spec.team_id.to_string())
    }

    const LIST_PAGE_SIZE: usize = PAGE_SIZE;

    async fn list(
        &self,
        cx: &Cx<'_, AccessProfile>,
        team_id: &str,
    ) -> Result<Vec<ServalProfile>, UpstreamError> {
        list_team(cx, team_id).await
    }

    fn observed_value(&self, observed: &ServalProfile, field: &str) -> Option<Value> {
        crate::providers::field_of(observed, field)
    }

    fn diff(&self, cx: &Cx<'_, AccessProfile>, observed: &ServalProfile) -> Diff {
        let spec = &cx.obj.spec;
        let mut diff = Diff::default();
        diff.check(
            "name",
            spec.name.as_ref().is_some_and(|n| *n != observed.name),
        );
        diff.check(
            "description",
            spec.description
                .as_ref()
                .is_some_and(|d| d != observed.description.as_deref().unwrap_or_default()),
        );
        diff.check(
            "matchingCriteria",
            spec.matching_criteria
                .as_ref()
                .and_then(|c| c.groups.as_ref())
                .is_some_and(|g| groups_differ(g, &observed.groups())),
        );
        diff.check("grants", grants_differ(spec, observed));
        diff
    }

    fn create_calls(&self, cx: &Cx<'_, AccessProfile>) -> Vec<Call> {
        let spec = &cx.obj.spec;
        let none = ServalProfile::default();
        let mut body = Map::new();
        body.insert("teamId".into(), json!(spec.team_id));
        body.insert("name".into(), json!(spec.name));
        if let Some(description) = &spec.description {
            body.insert("description".into(), json!(description));
        }
        if let Some(criteria) = &spec.matching_criteria {
            body.insert("matchingCriteria".into(), criteria_body(criteria, &none));
        }
        if spec.grants.is_some() {
            body.insert("grants".into(), grants_body(spec, &none));
        }
        vec![
            Call::post("create_access_profile", "v2/access-profiles")
                .json(Value::Object(body))
                .non_idempotent(),
        ]
    }

    fn update_calls(
        &self,
        cx: &Cx<'_, AccessProfile>,
        observed: &ServalProfile,
        diff: &Diff,
    ) -> Vec<Call> {
        let spec = &cx.obj.spec;
        let mut body = Map::new();
        for field in &diff.fields {
            let value = match *field {
                "name" => json!(spec.name),
                "description" => json!(spec.description),
                "matchingCriteria" => {
                    criteria_body(spec.matching_criteria.as_ref().expect("diffed"), observed)
                }
                "grants" => grants_body(spec, observed),
                _ => continue,
            };
            body.insert((*field).into(), value);
        }
        vec![
            Call::put("update_access_profile", profile_path(&observed.id))
                .json(Value::Object(body)),
        ]
    }

    async fn create(
        &self,
        cx: &Cx<'_, AccessProfile>,
        calls: Vec<Call>,
    ) -> Result<Created<ServalProfile>, UpstreamError> {
        let one: One = cx.upstream.json(single(calls)).await?;
        Ok(Created::Done(one.data))
    }

    async fn update(
        &self,
        cx: &Cx<'_, AccessProfile>,
        _observed: &ServalProfile,
        _diff: &Diff,
        calls: Vec<Call>,
    ) -> Result<Written<ServalProfile>, UpstreamError> {
        let one: One = cx.upstream.json(single(calls)).await?;
        Ok(Written::Done(Some(one.data)))
    }

    fn delete_calls(&self, _cx: &Cx<'_, AccessProfile>, id: &str) -> Vec<Call> {
        vec![Call::delete("delete_access_profile", profile_path(id))]
    }

    async fn delete(
        &self,
        cx: &Cx<'_, AccessProfile>,
        calls: Vec<Call>,
    ) -> Result<Written<()>, UpstreamError> {
        send_delete(cx.upstream, calls).await?;
        Ok(Written::Done(None))
    }

    fn refuse_delete(&self, observed: &ServalProfile) -> Option<String> {
        observed.is_team_default.then(|| {
            format!(
                "access profile {} is its team's default profile and is never deleted",
                observed.id
            )
        })
    }

    fn allowed_scope_of(&self, obj: &AccessProfile, _inputs: Option<&()>) -> Option<String> {
        Some(obj.spec.team_id.to_string())
    }

    const IMPORT_SCOPE: &'static [ScopeFlag] = &[ScopeFlag {
        flag: "team",
        field: "teamId",
    }];
    const IMPORTED_FIELDS: &'static [&'static str] =
        &["name", "description", "matchingCriteria", "grants"];

    fn display_name(&self, observed: &ServalProfile) -> Option<String> {
        Some(observed.name.clone())
    }

    fn facts(&self, _cx: &Cx<'_, AccessProfile>, observed: &ServalProfile) -> Map<String, Value> {
        Map::from_iter([("isTeamDefault".to_string(), json!(observed.is_team_default))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::access_profile::{AppResourceRoleGrant, Grants, WorkflowGrant};
    use crate::api::envelope::{ConnectionRef, ManagedFields};

    fn spec() -> AccessProfileSpec {
        AccessProfileSpec {
            managed: ManagedFields {
                connection_ref: ConnectionRef::local("serval"),
                management_policy: None,
                deletion_policy: None,
                external_id: None,
            },
            team_id: "team".into(),
            name: Some("P".into()),
            description: None,
            matching_criteria: None,
            grants: None,
        }
    }

    fn observed() -> ServalProfile {
        serde_json::from_value(json!({
            "id": "ap-1", "teamId": "team", "name": "P", "description": "set in the UI",
            "matchingCriteria": {"groups": {"matchType": MATCH_TYPE_UNSPECIFIED, "includedGroupIds": ["g2", "g1"], "excludedGroupIds": []}},
            "grants": {"appResourceRoles": [{"appResourceRoleId": "r1", "useTeamDefaultAccessProfile": false}], "workflows": [{"workflowId": "w1"}]}
        }))
        .unwrap()
    }

    fn diff(spec: AccessProfileSpec) -> Vec<&'static str> {
        AccessProfileProvider
            .diff(
                &Cx {
                    obj: &AccessProfile::new("p", spec),
                    upstream: &crate::providers::offline_client(),
                    inputs: &(),
                },
                &observed(),
            )
            .fields
    }

    #[test]
    fn omitted_fields_are_unmanaged() {
        assert!(diff(spec()).is_empty());
    }

    #[test]
    fn id_lists_compare_as_sets() {
        let mut s = spec();
        s.matching_criteria = Some(MatchingCriteria {
            groups: Some(GroupCriteria {
                match_type: None,
                included_group_ids: Some(vec!["g1".into(), "g2".into()]),
                excluded_group_ids: None,
            }),
        });
        assert!(diff(s.clone()).is_empty());
        s.matching_criteria
            .as_mut()
            .unwrap()
            .groups
            .as_mut()
            .unwrap()
            .included_group_ids = Some(vec!["g1".into()]);
        assert_eq!(diff(s), vec!["matchingCriteria"]);
    }

    #[test]
    fn description_empty_string_clears() {
        let mut s = spec();
        s.description = Some(String::new());
        assert_eq!(diff(s), vec!["description"]);
    }

    #[test]
    fn replace_all_bodies_keep_unmanaged_sub_lists() {
        let mut s = spec();
        s.grants = Some(Grants {
            app_resource_roles: None,
            workflows: Some(vec![WorkflowGrant {
                workflow_id: "w2".into(),
            }]),
        });
        assert_eq!(diff(s.clone()), vec!["grants"]);
        let body = grants_body(&s, &observed());
        assert_eq!(
            body,
            json!({"appResourceRoles": [{"appResourceRoleId": "r1"}], "workflows": [{"workflowId": "w2"}]})
        );

        s.grants = Some(Grants {
            app_resource_roles: Some(vec![AppResourceRoleGrant {
                app_resource_role_id: "r1".into(),
            }]),
            workflows: None,
        });
        assert!(diff(s).is_empty());
    }
}
