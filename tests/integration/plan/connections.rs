//! `accessplane plan`'s Connection resolution (`src/plan/connections.rs`) against a fake
//! Serval, from manifests alone (no cluster): Connections and ClusterConnections with
//! their Secrets in the input, verified like the operator does, read-only clients, and
//! the reasons a resource would show when its Connection would not work.

use accessplane::api::connection::UpstreamKind;
use accessplane::api::envelope::{ConnectionKind, ConnectionRef};
use accessplane::plan::connections::PlanConnections;
use accessplane::plan::manifests::load;
use accessplane::upstream::{Call, UpstreamError};

use crate::support::fake_serval::FakeServal;

fn manifests(serval: &FakeServal, client_secret: &str) -> String {
    let url = serval.base_url();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: team}}\nstringData: {{clientId: plan-client, clientSecret: {client_secret}}}\n---\n\
         apiVersion: accessplane.io/v1alpha1\nkind: Connection\nmetadata: {{name: serval, namespace: team}}\nspec: {{serval: {{baseUrl: '{url}', credentialsSecretRef: {{name: creds}}}}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: shared-creds, namespace: accessplane-system}}\ndata: {{clientId: cGxhbi1jbGllbnQ=, clientSecret: czNjcmV0}}\n---\n\
         apiVersion: accessplane.io/v1alpha1\nkind: ClusterConnection\nmetadata: {{name: shared}}\nspec: {{serval: {{baseUrl: '{url}', credentialsSecretRef: {{name: shared-creds}}}}, allowedNamespaces: {{names: [team]}}}}\n"
    )
}

fn shared() -> ConnectionRef {
    ConnectionRef {
        kind: Some(ConnectionKind::ClusterConnection),
        name: "shared".into(),
    }
}

#[tokio::test]
async fn connections_come_from_the_input_verified_and_read_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let serval = FakeServal::start().await;
    serval.add_client("plan-client", "s3cret");
    let input = load(&["-".into()], &mut manifests(&serval, "s3cret").as_bytes()).unwrap();
    let mut connections = PlanConnections::new(&input, None, "default", "accessplane-system");

    let client = connections
        .resolve(
            "team",
            &ConnectionRef::local("serval"),
            UpstreamKind::Serval,
        )
        .await
        .unwrap();
    let refused = client
        .send(Call::post("create_access_profile", "v2/access-profiles"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, UpstreamError::WriteRefused { .. }),
        "{refused}"
    );
    assert!(
        connections
            .resolve("team", &shared(), UpstreamKind::Serval)
            .await
            .is_ok()
    );
    let writes = serval
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("token"))
        .count();
    assert_eq!(writes, 0, "only token exchanges and reads reached Serval");

    let other = connections
        .resolve("other", &shared(), UpstreamKind::Serval)
        .await
        .unwrap_err();
    assert_eq!(other.reason, "ConnectionNotAllowed");
    assert!(
        other.message.contains("namespace other"),
        "{}",
        other.message
    );

    let missing = connections
        .resolve(
            "team",
            &ConnectionRef::local("absent"),
            UpstreamKind::Serval,
        )
        .await
        .unwrap_err();
    assert_eq!(missing.reason, "WaitingForDependency");
    assert!(
        missing
            .message
            .contains("Connection team/absent does not exist"),
        "{}",
        missing.message
    );

    let wrong_kind = connections
        .resolve(
            "team",
            &ConnectionRef::local("serval"),
            UpstreamKind::Instaclustr,
        )
        .await
        .unwrap_err();
    assert!(
        wrong_kind.message.contains("needs spec.instaclustr"),
        "{}",
        wrong_kind.message
    );
}

#[tokio::test]
async fn a_connection_that_would_not_authenticate_blocks_without_its_secret_in_the_message() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let serval = FakeServal::start().await;
    serval.add_client("plan-client", "s3cret");
    let input = load(
        &["-".into()],
        &mut manifests(&serval, "wr0ng-secret").as_bytes(),
    )
    .unwrap();
    let mut connections = PlanConnections::new(&input, None, "default", "accessplane-system");
    let blocked = connections
        .resolve(
            "team",
            &ConnectionRef::local("serval"),
            UpstreamKind::Serval,
        )
        .await
        .unwrap_err();
    assert_eq!(blocked.reason, "WaitingForDependency");
    assert!(
        blocked
            .message
            .starts_with("Connection team/serval is not ready: AuthenticationFailed"),
        "{}",
        blocked.message
    );
    assert!(
        !blocked.message.contains("wr0ng-secret"),
        "{}",
        blocked.message
    );
}
