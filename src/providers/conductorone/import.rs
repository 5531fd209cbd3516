//! `accessplane import` scopes in ConductorOne: apps (app entitlements, connectors) and
//! an app's connectors (toolsets). `--all` lists the tenant's apps, and each app's
//! connectors for toolsets. An app's toolsets back app entitlements of their own, which
//! the toolset's resource manages: they are not imported as app entitlements.

use std::collections::HashMap;

use serde::Deserialize;

use super::api;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::engine::{ImportScope, ScopeValues};
use crate::providers::segment;
use crate::upstream::{UpstreamClient, UpstreamError};

#[derive(Deserialize)]
struct App {
    id: String,
}

#[derive(Deserialize)]
struct ConnectorView {
    connector: App,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Toolset {
    id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    app_entitlement_id: Option<String>,
}

/// The app entitlements of `app` that back an MCP toolset, by id, with why they are
/// left to the toolset: one List of the app's connectors and one of each one's toolsets.
pub(super) async fn toolset_entitlements(
    upstream: &UpstreamClient,
    app: &str,
) -> Result<HashMap<String, String>, UpstreamError> {
    let path = format!("api/v1/apps/{}/connectors", segment(app));
    let connectors: Vec<ConnectorView> =
        api::list_all(upstream, "list_connectors", &path, "list").await?;
    let mut backing = HashMap::new();
    for view in connectors {
        let path = format!(
            "api/v1/apps/{}/connectors/{}/mcp_toolsets",
            segment(app),
            segment(&view.connector.id)
        );
        let toolsets: Vec<Toolset> =
            api::list_all(upstream, "list_mcp_toolsets", &path, "profiles").await?;
        for toolset in toolsets {
            if let Some(entitlement) = toolset.app_entitlement_id.filter(|e| !e.is_empty()) {
                let reason = format!(
                    "backs MCP toolset {} ({:?}), whose McpToolset resource manages it",
                    toolset.id,
                    toolset.display_name.unwrap_or_default()
                );
                backing.insert(entitlement, reason);
            }
        }
    }
    Ok(backing)
}

/// Every app of the tenant, by id.
async fn app_ids(upstream: &UpstreamClient) -> Result<Vec<String>, String> {
    let apps: Vec<App> = api::list_all(upstream, "list_apps", "api/v1/apps", "list")
        .await
        .map_err(|e| format!("listing the apps: {e}"))?;
    Ok(apps.into_iter().map(|a| a.id).collect())
}

/// Every connector of `app`, by id.
async fn connector_ids(upstream: &UpstreamClient, app: &str) -> Result<Vec<String>, String> {
    let path = format!("api/v1/apps/{}/connectors", segment(app));
    let views: Vec<ConnectorView> = api::list_all(upstream, "list_connectors", &path, "list")
        .await
        .map_err(|e| format!("listing the connectors of app {app}: {e}"))?;
    Ok(views.into_iter().map(|v| v.connector.id).collect())
}

fn given<'a>(flags: &'a ScopeValues, flag: &str) -> &'a [String] {
    flags.get(flag).map(Vec::as_slice).unwrap_or_default()
}

/// `--app` values, or with `all` every app: one scope each (`appId`).
pub(super) fn app_scopes<'a>(
    upstream: &'a UpstreamClient,
    flags: &'a ScopeValues,
    all: bool,
) -> BoxFuture<'a, Result<Vec<ImportScope>, String>> {
    async move { app_scopes_now(upstream, flags, all).await }.boxed()
}

async fn app_scopes_now(
    upstream: &UpstreamClient,
    flags: &ScopeValues,
    all: bool,
) -> Result<Vec<ImportScope>, String> {
    let apps = match all {
        true => app_ids(upstream).await?,
        false => given(flags, "app").to_vec(),
    };
    Ok(apps
        .into_iter()
        .map(|app| ImportScope::from([("appId", app)]))
        .collect())
}

/// `--app` with its `--connector`s, or every connector of each `--app`, or with `all`
/// every connector of every app: one scope each (`appId`, `connectorId`).
pub(super) fn connector_scopes<'a>(
    upstream: &'a UpstreamClient,
    flags: &'a ScopeValues,
    all: bool,
) -> BoxFuture<'a, Result<Vec<ImportScope>, String>> {
    async move { connector_scopes_now(upstream, flags, all).await }.boxed()
}

async fn connector_scopes_now(
    upstream: &UpstreamClient,
    flags: &ScopeValues,
    all: bool,
) -> Result<Vec<ImportScope>, String> {
    let connectors = given(flags, "connector");
    let apps = match all {
        true => app_ids(upstream).await?,
        false => given(flags, "app").to_vec(),
    };
    if !connectors.is_empty() && apps.len() != 1 {
        return Err("--connector needs exactly one --app, the connectors' app".into());
    }
    let mut scopes = vec![];
    for app in apps {
        let ids = match connectors.is_empty() {
            true => connector_ids(upstream, &app).await?,
            false => connectors.to_vec(),
        };
        for connector in ids {
            scopes.push(ImportScope::from([
                ("appId", app.clone()),
                ("connectorId", connector),
            ]));
        }
    }
    Ok(scopes)
}
