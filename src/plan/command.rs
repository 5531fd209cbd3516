//! `accessplane plan` as a command: load the input, connect to the cluster through the
//! current kubeconfig (unless offline), plan, print, and exit like
//! `terraform plan -detailed-exitcode` (0 no changes, 2 changes, 1 blocked or error).

use std::io::IsTerminal;
use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::manifests::load;
use super::planner::{Options, plan};
use super::report::Format;

/// The plan's `User-Agent` towards Kubernetes.
pub const USER_AGENT: &str = concat!("accessplane-plan/", env!("CARGO_PKG_VERSION"));

/// `accessplane plan`'s command line.
#[derive(Clone, Debug, clap::Args)]
pub struct PlanArgs {
    /// Manifests: files, folders (recursively: .yaml, .yml, .json) or `-` for standard
    /// input (e.g. the output of `helm template` or `kustomize build`). Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace of manifests that name none (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
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
    /// Also plan resources of the cluster that match --selector but are not in the input:
    /// what deleting them would do upstream (by their deletion policy).
    #[arg(long, requires = "selector")]
    pub prune: bool,
    /// Label selector of the resources --prune considers (e.g. app.kubernetes.io/instance=access).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Output format: text (coloured on a terminal), json (stable, `formatVersion`), markdown.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Plan from the input alone, without a cluster: resources count as never applied.
    #[arg(long, conflicts_with_all = ["prune", "context"])]
    pub offline: bool,
    /// Exit code when changes are present (0 for a gate that fails only on blocked
    /// resources, e.g. an Argo CD PreSync hook).
    #[arg(long, default_value_t = 2)]
    pub changes_exit_code: u8,
}

impl PlanArgs {
    /// What the command line asks for.
    pub fn command(self) -> PlanCommand {
        PlanCommand {
            files: self.files,
            namespace: self.namespace,
            context: self.context,
            credentials_namespace: self.credentials_namespace,
            prune_selector: self.prune.then_some(self.selector).flatten(),
            output: self.output,
            offline: self.offline,
            changes_exit_code: self.changes_exit_code,
        }
    }
}

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct PlanCommand {
    pub files: Vec<PathBuf>,
    /// Namespace of input objects that name none (default: the kubeconfig context's).
    pub namespace: Option<String>,
    pub context: Option<String>,
    pub credentials_namespace: String,
    pub prune_selector: Option<String>,
    pub output: Output,
    pub offline: bool,
    /// The exit code when changes are present (2, as `terraform plan
    /// -detailed-exitcode`; 0 for gates that fail only on blocked resources).
    pub changes_exit_code: u8,
}

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
    Markdown,
}

/// Runs the command; the process exit code.
pub async fn run(command: PlanCommand) -> u8 {
    match plan_and_print(command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("accessplane plan: {error}");
            1
        }
    }
}

async fn plan_and_print(command: PlanCommand) -> Result<u8, String> {
    let input = load(&command.files, &mut std::io::stdin().lock()).map_err(|e| e.to_string())?;
    let (cluster, context_namespace) = if command.offline {
        (None, "default".to_string())
    } else {
        let (client, namespace) = connect(command.context.clone(), USER_AGENT).await?;
        (Some(client), namespace)
    };
    let options = Options {
        default_namespace: command.namespace.clone().unwrap_or(context_namespace),
        credentials_namespace: command.credentials_namespace.clone(),
        prune_selector: command.prune_selector.clone(),
    };
    let plan = plan(&input, cluster, &options)
        .await
        .map_err(|e| e.to_string())?;
    let format = match command.output {
        Output::Json => Format::Json,
        Output::Markdown => Format::Markdown,
        // Colour only for a person at a terminal (and never with NO_COLOR set).
        Output::Text => Format::Text {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        },
    };
    print!("{}", plan.render(format));
    Ok(match plan.exit_code() {
        2 => command.changes_exit_code,
        code => code,
    })
}

/// A client of the cluster of the current kubeconfig (or `context`), sending
/// `user_agent` (audit logs and API Priority and Fairness tell a command from the
/// operator), and the context's namespace.
pub(crate) async fn connect(
    context: Option<String>,
    user_agent: &'static str,
) -> Result<(kube::Client, String), String> {
    let mut config = cluster_config(context).await?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(user_agent),
    ));
    let namespace = config.default_namespace.clone();
    let client =
        kube::Client::try_from(config).map_err(|e| format!("connecting to the cluster: {e}"))?;
    Ok((client, namespace))
}

/// The current kubeconfig (`KUBECONFIG`, `~/.kube/config`, or in-cluster), optionally
/// at another context.
async fn cluster_config(context: Option<String>) -> Result<kube::Config, String> {
    let advice = "(use --offline to plan from the input alone)";
    match context {
        Some(context) => {
            let kubeconfig =
                Kubeconfig::read().map_err(|e| format!("reading the kubeconfig: {e} {advice}"))?;
            let options = KubeConfigOptions {
                context: Some(context),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| format!("loading the kubeconfig context: {e} {advice}"))
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("no cluster to read the resources' recorded state from: {e} {advice}")
        }),
    }
}
