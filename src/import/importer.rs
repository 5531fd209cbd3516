//! The import of one kind: list each scope through the provider's own List with the
//! read-only client of a Connection, and turn every upstream object into the resource
//! that manages it as it is — kept only when the provider's own [`Provider::diff`] of
//! that resource against the object is empty, so applying the output changes nothing
//! upstream.

use std::collections::HashMap;

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use kube::api::{Api, ListParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::{Map, Value, json};

use super::names::{label_of, unique_names};
use crate::api::GROUP_VERSION;
use crate::api::envelope::{ConnectionRef, DeletionPolicy};
use crate::engine::{Cx, ImportScope, ManagedObject, Provider, ScopeValues};
use crate::plan::connections::PlanConnections;
use crate::plan::kube_view::KubeView;
use crate::plan::manifests::Loaded;
use crate::upstream::UpstreamClient;

/// The label every imported resource carries, valued with its Connection's name, so
/// `accessplane plan --prune -l accessplane.io/imported-from=<name>` follows the set.
pub const IMPORTED_FROM: &str = "accessplane.io/imported-from";

/// What to import.
#[derive(Clone, Debug)]
pub struct Options {
    /// The kind, as written in manifests (`AccessProfile`), or its plural or lower case.
    pub kind: String,
    /// The Connection (or ClusterConnection) to read through.
    pub connection: ConnectionRef,
    /// Namespace of the generated resources (and of a `Connection`).
    pub namespace: String,
    /// Where ClusterConnections' Secrets live (the operator's `--credentials-namespace`).
    pub credentials_namespace: String,
    /// Scope flags' values, by flag (`team` → its values).
    pub given: ScopeValues,
    /// `--all`: every scope the upstream lists.
    pub all: bool,
    pub deletion_policy: DeletionPolicy,
    /// `--observe`: `managementPolicy: Observe`.
    pub observe: bool,
    /// `--include-managed`: also objects a resource in the cluster already manages.
    pub include_managed: bool,
}

/// One resource of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    pub kind: String,
    pub name: String,
    /// The whole manifest.
    pub manifest: Value,
    /// What the resource leaves unmanaged, written above it.
    pub note: Option<&'static str>,
}

/// An upstream object left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub kind: String,
    pub id: String,
    pub display_name: String,
    pub reason: String,
}

/// The outcome of an import: resources sorted by name, skipped objects by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub imported: Vec<Imported>,
    pub skipped: Vec<Skipped>,
    /// Whether objects already managed in the cluster were looked for (not offline, and
    /// not `--include-managed`).
    pub managed_checked: bool,
}

/// An import that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Usage(String),
    #[error("{connection}: {reason}: {message}")]
    Connection {
        connection: String,
        reason: &'static str,
        message: String,
    },
    #[error("listing {what}: {message}")]
    Upstream { what: String, message: String },
    #[error(
        "listing the {kind} resources in the cluster (to skip managed objects; --offline or --include-managed skip this): {source}"
    )]
    Cluster {
        kind: String,
        #[source]
        source: kube::Error,
    },
}

/// Imports the objects `options` names. `input` holds Connections and Secrets given as
/// files (else they are read from `cluster`); `cluster` is `None` offline.
pub async fn import(
    input: &[Loaded],
    cluster: Option<kube::Client>,
    options: &Options,
) -> Result<Outcome, ImportError> {
    let Some(import_kind) = kind_importers()
        .into_iter()
        .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(&options.kind)))
        .map(|(_, import_kind)| import_kind)
    else {
        return Err(ImportError::Usage(format!(
            "unknown kind {:?}; kinds: {}",
            options.kind,
            crate::kinds::names().join(", ")
        )));
    };
    let importer = Importer {
        input,
        cluster,
        options,
    };
    import_kind(&importer).await
}

type ImportKind =
    for<'i, 'a> fn(&'i Importer<'a>) -> LocalBoxFuture<'i, Result<Outcome, ImportError>>;

/// Each managed kind's names (kind, plural, singular, short names) and its import.
fn kind_importers() -> Vec<(Vec<String>, ImportKind)> {
    struct Importers(Vec<(Vec<String>, ImportKind)>);
    impl crate::kinds::EachKind for Importers {
        fn kind<K, P>(&mut self)
        where
            K: ManagedObject + CustomResourceExt,
            P: Provider<K> + Default,
        {
            let names = K::crd().spec.names;
            let mut all = vec![names.kind, names.plural];
            all.extend(names.singular);
            all.extend(names.short_names.unwrap_or_default());
            self.0.push((all, |importer| {
                async move { importer.kind::<K, P>(&P::default()).await }.boxed_local()
            }));
        }
    }
    let mut importers = Importers(vec![]);
    crate::kinds::each_kind(&mut importers);
    importers.0
}

struct Importer<'a> {
    input: &'a [Loaded],
    cluster: Option<kube::Client>,
    options: &'a Options,
}

/// An object that will be imported, before names are given.
struct Found {
    label: String,
    id: String,
    manifest: Value,
}

impl Importer<'_> {
    async fn kind<K: ManagedObject, P: Provider<K>>(
        &self,
        provider: &P,
    ) -> Result<Outcome, ImportError> {
        let kind = K::kind(&()).to_string();
        self.check_flags::<K, P>()?;
        let client = self.client::<K, P>().await?;
        let scopes = self
            .scopes::<K, P>(&client)
            .await
            .map_err(ImportError::Usage)?;
        let managed = self.managed_ids::<K>().await?;
        let kube = KubeView::new(self.input, self.cluster.clone(), &self.options.namespace)
            .client(&self.options.namespace);
        let mut outcome = Outcome {
            managed_checked: managed.is_some(),
            ..Outcome::default()
        };
        let mut found = vec![];
        for scope in &scopes {
            self.scope::<K, P>(
                provider,
                &client,
                &kube,
                scope,
                managed.as_ref(),
                &mut found,
                &mut outcome.skipped,
            )
            .await?;
        }
        let labelled: Vec<(String, String)> = found
            .iter()
            .map(|f| (f.label.clone(), f.id.clone()))
            .collect();
        for (f, name) in found.into_iter().zip(unique_names(&labelled)) {
            let mut manifest = f.manifest;
            manifest["metadata"]["name"] = json!(name);
            outcome.imported.push(Imported {
                kind: kind.clone(),
                name,
                manifest,
                note: provider.import_note(),
            });
        }
        outcome.imported.sort_by(|a, b| a.name.cmp(&b.name));
        outcome.skipped.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(outcome)
    }

    /// Only the kind's own scope flags, and a scope named somehow.
    fn check_flags<K: ManagedObject, P: Provider<K>>(&self) -> Result<(), ImportError> {
        let kind = K::kind(&());
        let flags: Vec<String> = P::IMPORT_SCOPE
            .iter()
            .map(|s| format!("--{}", s.flag))
            .collect();
        if flags.is_empty() {
            return Err(ImportError::Usage(format!("{kind} cannot be imported")));
        }
        let scope = format!("{kind}'s scope: {}, or --all", flags.join(" "));
        for (flag, values) in &self.options.given {
            let ours = P::IMPORT_SCOPE.iter().any(|s| s.flag == *flag);
            if !values.is_empty() && !ours {
                return Err(ImportError::Usage(format!(
                    "--{flag} does not apply to {kind} ({scope})"
                )));
            }
        }
        let named = self.options.given.values().any(|v| !v.is_empty());
        match (named, self.options.all) {
            (false, false) => Err(ImportError::Usage(format!("name a scope ({scope})"))),
            (true, true) => Err(ImportError::Usage(format!(
                "--all lists every scope: name none with it ({scope})"
            ))),
            _ => Ok(()),
        }
    }

    /// The scopes to import: listed by the upstream where it lists them
    /// ([`Provider::IMPORT_SCOPE_LISTER`]), else the flag's values (`--all` refused).
    async fn scopes<K: ManagedObject, P: Provider<K>>(
        &self,
        client: &UpstreamClient,
    ) -> Result<Vec<ImportScope>, String> {
        let (given, all) = (&self.options.given, self.options.all);
        if let Some(lister) = P::IMPORT_SCOPE_LISTER {
            return lister(client, given, all).await;
        }
        match P::IMPORT_SCOPE {
            [one] if all => Err(format!(
                "--all: the upstream publishes no list of its {}s; name each with --{}",
                one.flag, one.flag
            )),
            [one] => Ok(given
                .get(one.flag)
                .into_iter()
                .flatten()
                .map(|value| ImportScope::from([(one.field, value.clone())]))
                .collect()),
            _ => Err(format!("{} cannot be imported", K::kind(&()))),
        }
    }

    /// The Connection's read-only client, built and verified as the operator does.
    async fn client<K: ManagedObject, P: Provider<K>>(
        &self,
    ) -> Result<UpstreamClient, ImportError> {
        let options = self.options;
        let mut connections = PlanConnections::new(
            self.input,
            self.cluster.clone(),
            &options.namespace,
            &options.credentials_namespace,
        );
        connections
            .resolve(&options.namespace, &options.connection, P::UPSTREAM)
            .await
            .map_err(|blocked| ImportError::Connection {
                connection: format!(
                    "{:?} {}",
                    options.connection.kind(),
                    options.connection.name
                ),
                reason: blocked.reason,
                message: blocked.message,
            })
    }

    /// Upstream ids already managed by a resource of the kind in the cluster (any
    /// namespace), with the resource; `None` when not looked for.
    async fn managed_ids<K: ManagedObject>(
        &self,
    ) -> Result<Option<HashMap<String, String>>, ImportError> {
        let Some(cluster) = self
            .cluster
            .clone()
            .filter(|_| !self.options.include_managed)
        else {
            return Ok(None);
        };
        let list = Api::<K>::all(cluster)
            .list(&ListParams::default())
            .await
            .map_err(|source| ImportError::Cluster {
                kind: K::kind(&()).to_string(),
                source,
            })?;
        let managed = list
            .items
            .iter()
            .filter_map(|obj| {
                let id = obj
                    .managed_status()?
                    .id
                    .clone()
                    .filter(|id| !id.is_empty())?;
                let at = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
                Some((id, at))
            })
            .collect();
        Ok(Some(managed))
    }

    /// Lists one scope and keeps each object the kind would manage exactly.
    #[allow(clippy::too_many_arguments)]
    async fn scope<K: ManagedObject, P: Provider<K>>(
        &self,
        provider: &P,
        client: &UpstreamClient,
        kube: &kube::Client,
        scope: &ImportScope,
        managed: Option<&HashMap<String, String>>,
        found: &mut Vec<Found>,
        skipped: &mut Vec<Skipped>,
    ) -> Result<(), ImportError> {
        let kind = K::kind(&()).to_string();
        let what = || format!("{kind} of {}", describe(scope));
        let stand_in: K = self.resource(provider.import_stand_in(), scope, None)?;
        let inputs =
            provider
                .resolve(kube, &stand_in)
                .await
                .map_err(|e| ImportError::Upstream {
                    what: what(),
                    message: e.to_string(),
                })?;
        let cx = Cx::new(&stand_in, client, &inputs);
        let key = provider.list_scope(&stand_in).unwrap_or_default();
        let upstream = |e: crate::upstream::UpstreamError| ImportError::Upstream {
            what: what(),
            message: e.to_string(),
        };
        let excluded = provider
            .import_exclusions(client, scope)
            .await
            .map_err(upstream)?;
        for listed in provider.list(&cx, &key).await.map_err(upstream)? {
            let observed = provider.complete(&cx, listed).await.map_err(upstream)?;
            let id = provider.id_of(&observed);
            let display_name = provider.display_name(&observed).unwrap_or_default();
            let skip = |reason: String| Skipped {
                kind: kind.clone(),
                id: id.clone(),
                display_name: display_name.clone(),
                reason,
            };
            if let Some(reason) = provider
                .refuse_update(&observed)
                .or_else(|| provider.refuse_delete(&observed))
            {
                skipped.push(skip(reason));
                continue;
            }
            if let Some(reason) = excluded.get(&id) {
                skipped.push(skip(reason.clone()));
                continue;
            }
            if let Some(at) = managed.and_then(|m| m.get(&id)) {
                skipped.push(skip(format!(
                    "already managed by {kind} {at} (--include-managed imports it too)"
                )));
                continue;
            }
            let fields = provider
                .imported_fields(&cx, &observed)
                .await
                .map_err(upstream)?;
            let imported: K = self.resource(fields, scope, Some(&id))?;
            let diff = provider.diff(&Cx::new(&imported, client, &inputs), &observed);
            if !diff.is_empty() || !diff.unresolved.is_empty() {
                let mut parts: Vec<String> = diff.fields.iter().map(|f| f.to_string()).collect();
                parts.extend(diff.unresolved.iter().map(|u| u.message.clone()));
                skipped.push(skip(format!(
                    "not imported: its resource would still change {} (please report this)",
                    parts.join(", ")
                )));
                continue;
            }
            let manifest = serde_json::to_value(&imported).expect("a resource serializes");
            found.push(Found {
                label: label_of(&display_name, &kind.to_lowercase()),
                id,
                manifest,
            });
        }
        Ok(())
    }

    /// The resource with `fields`, the scope's fields, the Connection, the policies and
    /// (for an object found upstream) its `externalId`, read back through the kind's
    /// own type: what the type does not hold is dropped, as the apiserver would prune it.
    fn resource<K: ManagedObject>(
        &self,
        fields: Map<String, Value>,
        scope: &ImportScope,
        external_id: Option<&str>,
    ) -> Result<K, ImportError> {
        let options = self.options;
        let mut spec = fields;
        spec.insert("connectionRef".into(), json!(options.connection));
        for (field, value) in scope {
            spec.insert(field.to_string(), json!(value));
        }
        if let Some(id) = external_id {
            spec.insert("externalId".into(), json!(id));
            spec.insert("deletionPolicy".into(), json!(options.deletion_policy));
            if options.observe {
                spec.insert("managementPolicy".into(), json!("Observe"));
            }
        }
        let manifest = json!({
            "apiVersion": GROUP_VERSION,
            "kind": K::kind(&()),
            "metadata": {
                "name": "imported",
                "namespace": options.namespace,
                "labels": {IMPORTED_FROM: options.connection.name},
            },
            "spec": spec,
        });
        serde_json::from_value(manifest).map_err(|e| ImportError::Upstream {
            what: format!("{} of {}", K::kind(&()), describe(scope)),
            message: format!("an object does not fit the {} schema: {e}", K::kind(&())),
        })
    }
}

/// `teamId team-a`, for messages.
fn describe(scope: &ImportScope) -> String {
    let parts: Vec<String> = scope.iter().map(|(k, v)| format!("{k} {v}")).collect();
    parts.join(", ")
}
