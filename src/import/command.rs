//! `accessplane import` as a command: its flags, the cluster through the current
//! kubeconfig (unless offline), the import, the output, and the skipped objects on
//! standard error. Exit code 0, or 1 on an error (nothing is printed then).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use super::importer::{IMPORTED_FROM, Options, Outcome, import};
use super::output::{Format, render, write_files};
use crate::api::envelope::{ConnectionKind, ConnectionRef, DeletionPolicy};
use crate::plan::command::connect;
use crate::plan::manifests::load;

/// The import's `User-Agent` towards Kubernetes.
pub const USER_AGENT: &str = concat!("accessplane-import/", env!("CARGO_PKG_VERSION"));

/// A worked example, at the end of `accessplane import --help`.
pub const IMPORT_HELP: &str = "\
Example: bring a Serval team's access profiles under Git, review, then preview:
  accessplane import AccessProfile --connection serval-prod --team 5b0c2e8e-0000-4000-8000-000000000001 \\
      -n platform-access --out-dir access/
  git diff access/
  accessplane plan -f access/     # every object shows as `adopt`, nothing to change
Guide: docs/src/import.md";

/// `accessplane import KIND --connection NAME <scope>`.
#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// The kind to import: AccessProfile, AppEntitlement, Connector, McpToolset or
    /// PersonaAccessControl (plural and short names work too).
    pub kind: String,
    /// The Connection (in --namespace) to read the upstream through.
    #[arg(
        long,
        required_unless_present = "cluster_connection",
        conflicts_with = "cluster_connection"
    )]
    pub connection: Option<String>,
    /// The ClusterConnection to read the upstream through (it must allow --namespace).
    #[arg(long)]
    pub cluster_connection: Option<String>,
    /// Serval team (AccessProfile). Repeatable.
    #[arg(long)]
    pub team: Vec<String>,
    /// ConductorOne app (AppEntitlement, Connector, McpToolset: all its connectors'
    /// toolsets unless --connector). Repeatable.
    #[arg(long)]
    pub app: Vec<String>,
    /// ConductorOne connector of --app (McpToolset). Repeatable.
    #[arg(long, requires = "app")]
    pub connector: Vec<String>,
    /// MCP Gateway cluster (PersonaAccessControl). Repeatable.
    #[arg(long)]
    pub cluster: Vec<String>,
    /// Every scope the Connection can list (ConductorOne: every app and connector).
    #[arg(long)]
    pub all: bool,
    /// Namespace of the generated resources (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// What deleting a generated resource does upstream.
    #[arg(long, value_enum, default_value_t = DeletionPolicyArg::Orphan)]
    pub deletion_policy: DeletionPolicyArg,
    /// Generate `managementPolicy: Observe` resources (never written upstream).
    #[arg(long)]
    pub observe: bool,
    /// Also import objects a resource in the cluster already manages.
    #[arg(long)]
    pub include_managed: bool,
    /// Without a cluster: the Connection and its Secret come from -f, and objects
    /// already managed are not looked for.
    #[arg(long, conflicts_with = "context")]
    pub offline: bool,
    /// Files or folders with the Connection and its Secret (instead of the cluster's).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// The kubeconfig context to read the cluster through (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace of ClusterConnections' credentials Secrets (as the operator's flag).
    #[arg(
        long,
        env = "ACCESSPLANE_CREDENTIALS_NAMESPACE",
        default_value = "accessplane-system"
    )]
    pub credentials_namespace: String,
    /// Output format on standard output.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
    /// Write one file per resource, `<kind>/<name>.yaml`, under this folder instead.
    #[arg(long, conflicts_with = "output")]
    pub out_dir: Option<PathBuf>,
}

/// `--deletion-policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeletionPolicyArg {
    Orphan,
    Delete,
}

impl ImportArgs {
    fn connection(&self) -> ConnectionRef {
        match (&self.connection, &self.cluster_connection) {
            (_, Some(name)) => ConnectionRef {
                kind: Some(ConnectionKind::ClusterConnection),
                name: name.as_str().into(),
            },
            (Some(name), None) => ConnectionRef::local(name),
            (None, None) => unreachable!("clap requires one of the two"),
        }
    }

    fn options(&self, namespace: String) -> Options {
        let given = BTreeMap::from([
            ("team", self.team.clone()),
            ("app", self.app.clone()),
            ("connector", self.connector.clone()),
            ("cluster", self.cluster.clone()),
        ]);
        Options {
            kind: self.kind.clone(),
            connection: self.connection(),
            namespace,
            credentials_namespace: self.credentials_namespace.clone(),
            given,
            all: self.all,
            deletion_policy: match self.deletion_policy {
                DeletionPolicyArg::Orphan => DeletionPolicy::Orphan,
                DeletionPolicyArg::Delete => DeletionPolicy::Delete,
            },
            observe: self.observe,
            include_managed: self.include_managed,
        }
    }
}

/// Runs the command; the process exit code.
pub async fn run(args: ImportArgs) -> u8 {
    match import_and_print(args).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("accessplane import: {error}");
            1
        }
    }
}

async fn import_and_print(args: ImportArgs) -> Result<(), String> {
    let input = if args.files.is_empty() {
        vec![]
    } else {
        load(&args.files, &mut std::io::stdin().lock()).map_err(|e| e.to_string())?
    };
    let (cluster, context_namespace) = if args.offline {
        (None, "default".to_string())
    } else {
        let (client, namespace) = connect(args.context.clone(), USER_AGENT).await?;
        (Some(client), namespace)
    };
    let namespace = args.namespace.clone().unwrap_or(context_namespace);
    let options = args.options(namespace);
    let outcome = import(&input, cluster, &options)
        .await
        .map_err(|e| e.to_string())?;
    report_skipped(&outcome, &options.connection.name);
    match &args.out_dir {
        Some(dir) => {
            let written = write_files(&outcome, dir)
                .map_err(|e| format!("writing under {}: {e}", dir.display()))?;
            eprintln!("wrote {} files under {}", written.len(), dir.display());
        }
        None => print!("{}", render(&outcome, args.output)),
    }
    Ok(())
}

/// Each skipped object on standard error, and whether managed objects were looked for.
fn report_skipped(outcome: &Outcome, connection: &str) {
    for skipped in &outcome.skipped {
        eprintln!(
            "skipped {} {} ({:?}): {}",
            skipped.kind, skipped.id, skipped.display_name, skipped.reason
        );
    }
    if !outcome.managed_checked {
        eprintln!(
            "note: objects already managed by a resource in the cluster were not looked for (--offline or --include-managed)"
        );
    }
    eprintln!(
        "imported {} resources (label {IMPORTED_FROM}={connection}), skipped {}",
        outcome.imported.len(),
        outcome.skipped.len()
    );
}
