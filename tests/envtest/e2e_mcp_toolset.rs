//! End to end (see `e2e.rs`): the `McpToolset` example by `connectorRef`, against the
//! fake ConductorOne.

use std::time::Duration;

use accessplane::api::{Connector, McpToolset};
use accessplane::engine::requeue::Timing;
use serde_json::json;

use crate::e2e::{Cluster, Operator, cluster, example, fake_cluster, wait_for};
use crate::support::fake_c1::{FakeC1, TOOL_APPROVED};

#[tokio::test]
async fn e2e_mcp_toolset() {
    if let Some(cluster) = cluster().await {
        mcp_toolset(cluster).await;
    }
}

#[tokio::test]
async fn e2e_script_mcp_toolset() {
    mcp_toolset(fake_cluster()).await;
}

async fn mcp_toolset(cluster: Cluster) {
    let c1 = FakeC1::start().await;
    let app = c1.seed_app();
    let connector = c1.seed_connector(&app, "GitHub MCP");
    let tools = ["search_issues", "get_file_contents", "add_labels"]
        .map(|name| c1.seed_tool(&app, &connector, name, TOOL_APPROVED));
    // Retries of a resource waiting for a dependency come only after 5 minutes here: what
    // wakes the toolset when its Connector gets an id must be the watch of Connectors.
    let timing = Timing {
        resync: Duration::from_secs(60),
        error_backoff_base: Duration::from_secs(300),
        error_backoff_max: Duration::from_secs(300),
        ..Timing::default()
    };
    let op = Operator::start_with(cluster, timing).await;
    op.connect_c1(&c1).await;

    let mut toolset = example("conductorone/mcptoolset.yaml");
    // The example's tool id belongs to some tenant; use one of the fake's.
    toolset["spec"]["tools"][2] = json!({"id": tools[2]});
    op.apply::<McpToolset>(toolset.clone()).await;
    let toolsets = op.api::<McpToolset>();
    wait_for("the toolset to wait for its Connector", async || {
        let obj = serde_json::to_value(toolsets.get("github-readers").await.unwrap()).unwrap();
        obj["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["reason"] == "WaitingForDependency")
        })
    })
    .await;

    // The example toolset refers to the Connector `github`: here it adopts the seeded
    // connector, and the toolset waits until the Connector controller has its id.
    op.apply::<Connector>(
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "Connector",
        "metadata": {"name": "github"},
        "spec": {"connectionRef": {"name": "c1-prod"}, "appId": app, "externalId": connector}}),
    )
    .await;
    op.wait_ready::<McpToolset>("github-readers").await;
    op.settled::<McpToolset>(toolset.clone()).await;
    let id = toolsets
        .get("github-readers")
        .await
        .unwrap()
        .status
        .unwrap()
        .managed
        .id
        .unwrap();
    assert_eq!(c1.toolset(&id).unwrap()["displayName"], "GitHub readers");
    let mut bound = c1.bindings(&id);
    bound.sort();
    let mut want = tools.to_vec();
    want.sort();
    assert_eq!(bound, want);

    // A binding removed in the UI is bound again.
    let bound = || c1.bindings(&id).len();
    op.drift_corrected::<McpToolset>(
        toolset.clone(),
        || c1.unbind_tool_directly(&id, &tools[0]),
        || bound() == tools.len(),
    )
    .await;

    op.delete_and_wait::<McpToolset>("github-readers").await;
    assert!(
        c1.toolset(&id).unwrap()["deletedAt"].is_string(),
        "deleted upstream (the operator created it)"
    );
    let live = || {
        let all = c1.toolsets(&app, &connector).into_iter();
        let builtins = c1.builtin_toolsets(&app, &connector);
        all.filter(|p| {
            p["deletedAt"].is_null() && !builtins.contains(&p["id"].as_str().unwrap().to_string())
        })
        .count()
    };
    op.orphaned::<McpToolset>(toolset, async || live() == 1)
        .await;
    op.delete_and_wait::<Connector>("github").await;
    op.finish("c1-prod").await;
}
