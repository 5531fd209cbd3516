//! The Kubernetes a plan sees: the cluster as it would be once the input is applied, and
//! read-only. A `kube::Client` whose every request goes through [`KubeView`]:
//!
//! - A GET of an object the input defines (an accessplane resource, a Secret, a
//!   Namespace) answers the input's object, with what only the cluster knows taken from
//!   the cluster's copy when there is one: its `status`, the operator's own
//!   `accessplane.io/*` annotations, finalizers, uid and resourceVersion. So the
//!   providers' own `resolve` (a Connector's config Secret, a toolset's Connector id) and
//!   the engine read what the reconciler will read after the apply.
//! - Any other GET (and LIST) goes to the cluster (through the current kubeconfig), or
//!   answers 404 when planning offline.
//! - Anything else is refused before it leaves the process: a plan writes nothing to
//!   Kubernetes. A refused request is a bug, logged as one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::manifests::Loaded;

/// The objects of the input a view answers for, by request path.
#[derive(Clone)]
pub struct KubeView {
    input: Arc<HashMap<String, Value>>,
    cluster: Option<kube::Client>,
}

impl KubeView {
    /// A view of `cluster` (None: offline) with `input` applied; objects of the input
    /// without a namespace are in `default_namespace`.
    pub fn new(input: &[Loaded], cluster: Option<kube::Client>, default_namespace: &str) -> Self {
        let plurals: HashMap<String, String> = crate::kinds::all_crds()
            .into_iter()
            .map(|(_, crd)| (crd.spec.names.kind, crd.spec.names.plural))
            .collect();
        let input = input
            .iter()
            .filter_map(|l| {
                let mut obj = l.object.clone();
                let path = object_path(&obj, default_namespace, &plurals)?;
                if obj["metadata"]["namespace"].is_null() && namespaced(&obj) {
                    obj["metadata"]["namespace"] = json!(default_namespace);
                }
                Some((path, obj))
            })
            .collect();
        Self {
            input: Arc::new(input),
            cluster,
        }
    }

    /// A client reading through this view (default namespace `default_namespace`).
    pub fn client(&self, default_namespace: &str) -> kube::Client {
        let view = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let view = view.clone();
            async move { Ok::<_, Infallible>(view.answer(request).await) }
        });
        kube::Client::new(service, default_namespace)
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        if request.method() != Method::GET {
            tracing::error!(
                method = %request.method(),
                path = request.uri().path(),
                "BUG: accessplane plan tried to write to Kubernetes; refused"
            );
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!(
                    "accessplane plan writes nothing to Kubernetes ({} {} refused)",
                    request.method(),
                    request.uri().path()
                ),
            );
        }
        let path = request.uri().path().to_string();
        let Some(from_input) = self.input.get(&path) else {
            return self.forward(request).await;
        };
        let mut merged = from_input.clone();
        let cluster_copy = self.forward(request).await;
        if cluster_copy.status() == StatusCode::OK
            && let Ok(bytes) = cluster_copy.into_body().collect_bytes().await
            && let Ok(copy) = serde_json::from_slice::<Value>(&bytes)
        {
            merge_cluster_state(&mut merged, &copy);
        }
        if merged["kind"] == "Secret" {
            fold_string_data(&mut merged);
        }
        json_response(StatusCode::OK, &merged)
    }

    async fn forward(&self, request: Request<Body>) -> Response<Body> {
        let Some(cluster) = &self.cluster else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "planning offline: only the input is known",
            );
        };
        match cluster.send(request).await {
            Ok(response) => response,
            Err(error) => status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("reading the cluster: {error}"),
            ),
        }
    }
}

/// What only the cluster knows of an object, onto the input's copy.
pub(super) fn merge_cluster_state(obj: &mut Value, cluster: &Value) {
    for field in [
        "uid",
        "resourceVersion",
        "generation",
        "finalizers",
        "creationTimestamp",
    ] {
        if !cluster["metadata"][field].is_null() {
            obj["metadata"][field] = cluster["metadata"][field].clone();
        }
    }
    if let Some(theirs) = cluster["metadata"]["annotations"].as_object() {
        let operator_owned = theirs
            .iter()
            .filter(|(key, _)| key.starts_with("accessplane.io/"));
        for (key, value) in operator_owned {
            obj["metadata"]["annotations"][key] = value.clone();
        }
    }
    if !cluster["status"].is_null() {
        obj["status"] = cluster["status"].clone();
    }
}

/// `stringData` as the apiserver stores it: base64 in `data`.
fn fold_string_data(secret: &mut Value) {
    let Some(text) = secret.as_object_mut().and_then(|s| s.remove("stringData")) else {
        return;
    };
    for (key, value) in text.as_object().into_iter().flatten() {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or_default());
        secret["data"][key] = json!(encoded);
    }
}

fn namespaced(obj: &Value) -> bool {
    !matches!(
        obj["kind"].as_str(),
        Some("Namespace" | "ClusterConnection")
    )
}

/// The GET path of an input object the view answers for (accessplane kinds, Secrets,
/// Namespaces); `None` for other objects.
fn object_path(
    obj: &Value,
    default_namespace: &str,
    plurals: &HashMap<String, String>,
) -> Option<String> {
    let name = obj["metadata"]["name"].as_str()?;
    let namespace = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or(default_namespace);
    let (api_version, kind) = (obj["apiVersion"].as_str()?, obj["kind"].as_str()?);
    let prefix = match api_version {
        "v1" => "/api/v1".to_string(),
        crate::api::GROUP_VERSION => format!("/apis/{api_version}"),
        _ => return None,
    };
    let plural = match (api_version, kind) {
        ("v1", "Secret") => "secrets".to_string(),
        ("v1", "Namespace") => "namespaces".to_string(),
        ("v1", _) => return None,
        (_, kind) => plurals.get(kind)?.clone(),
    };
    Some(if namespaced(obj) {
        format!("{prefix}/namespaces/{namespace}/{plural}/{name}")
    } else {
        format!("{prefix}/{plural}/{name}")
    })
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::to_vec(body).expect("JSON serializes"),
        ))
        .expect("a valid response")
}

/// A Kubernetes `Status` error, as the apiserver answers.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}
