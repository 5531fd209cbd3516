//! The `accessplane` command: run the operator, print the CRDs, write the field reference,
//! print the version, probe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use accessplane::connections::{Credentials, SecretsScope};
use accessplane::engine::requeue::{Timing, parse_interval};
use accessplane::import::command::{self as import_command, IMPORT_HELP, ImportArgs};
use accessplane::plan::command::{self, PlanArgs};
use accessplane::reference;
use accessplane::runtime::telemetry::{self, LogFormat};
use accessplane::runtime::{self, LeaderElection, LeaseTiming, RunConfig, crds};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where the guide is, in the repository (the pointers work without a website).
const GUIDE_HELP: &str = "Guide: docs/src/introduction.md (getting started: docs/src/getting-started/helm.md; \
     troubleshooting by condition reason: docs/src/troubleshooting.md)";
const PLAN_HELP: &str = "Guide: docs/src/plan.md";

#[derive(Debug, Parser)]
#[command(
    name = "accessplane",
    version,
    about = "Manage SaaS access-control objects as Kubernetes custom resources",
    after_help = GUIDE_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator (in-cluster, or with the current kubeconfig).
    Run(RunArgs),
    /// Print all CRDs as one YAML stream, or write one file per CRD.
    Crds {
        /// Write `<kind>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write the field reference: one Markdown page per kind (`<kind-in-kebab-case>.md`:
    /// every spec and status field with its type, whether it is required, allowed values,
    /// limits and validation rules), generated from the CRD schemas, and a README.md index.
    /// The committed pages are written by `accessplane docs --dir docs/src/reference`.
    Docs {
        /// Directory to write the pages into (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Preview what the operator would change upstream for a set of manifests, writing
    /// nothing anywhere. Exit code: 0 no changes, 2 changes, 1 blocked or error.
    /// Installed as `kubectl-accessplane`, it is also `kubectl accessplane plan`.
    #[command(after_help = PLAN_HELP)]
    Plan(PlanArgs),
    /// Print a resource for every upstream object of a kind in a scope (a Serval team, a
    /// ConductorOne app or connector, a gateway cluster), each managing its object exactly
    /// as it is: applied, nothing changes upstream. Reads only.
    #[command(after_help = IMPORT_HELP)]
    Import(Box<ImportArgs>),
    /// Print the version.
    Version,
    /// GET a URL and exit 0 only on a 2xx answer (the chart's `helm test` runs
    /// `probe http://<release>-metrics.<namespace>.svc:<port>/readyz`).
    Probe {
        /// e.g. http://accessplane-metrics.accessplane-system.svc:8080/readyz
        url: String,
        /// Give up after this long (Go duration, e.g. 5s).
        #[arg(long, default_value = "5s", value_parser = parse_timeout)]
        timeout: Duration,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ACCESSPLANE_NAMESPACE")]
    namespace: Option<String>,
    /// Maximum concurrent reconciles per controller.
    #[arg(long, env = "ACCESSPLANE_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Resync interval of converged resources (Go duration, e.g. `10m`, `1h30m`; at least 10s).
    #[arg(long, env = "ACCESSPLANE_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_resync)]
    resync_interval: Duration,
    /// Resyncs per second per kind (0 = unlimited). Resyncs due beyond it wait for a
    /// slot; changes to resources never wait. Keep it above resources-per-kind ÷ interval.
    #[arg(long, env = "ACCESSPLANE_RESYNC_RATE", default_value_t = 50.0, value_parser = parse_rate)]
    resync_rate: f64,
    /// Log format.
    #[arg(long, env = "ACCESSPLANE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (`EnvFilter` directive, e.g. `info,accessplane=debug`); `RUST_LOG` overrides it.
    #[arg(long, env = "ACCESSPLANE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "ACCESSPLANE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Apply the bundled CRDs at start-up (server-side apply) and wait until they are Established.
    #[arg(long, env = "ACCESSPLANE_INSTALL_CRDS")]
    install_crds: bool,
    /// Reconcile only while holding a coordination.k8s.io Lease (for more than one replica).
    #[arg(long, env = "ACCESSPLANE_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE).
    #[arg(long, env = "ACCESSPLANE_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        env = "ACCESSPLANE_LEADER_ELECTION_LEASE",
        default_value = "accessplane-leader"
    )]
    leader_election_lease: String,
    /// How long the Lease stays valid after a renewal: how long a standby waits before it
    /// takes over from a leader that stopped renewing (Go duration).
    #[arg(long, env = "ACCESSPLANE_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_timeout)]
    leader_election_lease_duration: Duration,
    /// How often the leader renews the Lease (and a standby tries to take it). The leader
    /// writes only within lease duration − renew period of its last renewal; at most half
    /// the lease duration.
    #[arg(long, env = "ACCESSPLANE_LEADER_ELECTION_RENEW_PERIOD", default_value = "5s", value_parser = parse_timeout)]
    leader_election_renew_period: Duration,
    /// Namespace of every ClusterConnection's credentials Secret (default: the pod's
    /// namespace from POD_NAMESPACE, else `accessplane-system`).
    #[arg(long, env = "ACCESSPLANE_CREDENTIALS_NAMESPACE")]
    credentials_namespace: Option<String>,
    /// Where credentials Secrets are read: `cluster` (a Connection's Secret in its own
    /// namespace, and the credentials namespace) or `credentials-namespace` (only there:
    /// ClusterConnections only, namespaced Connections are refused).
    #[arg(long, env = "ACCESSPLANE_SECRETS_SCOPE", value_enum, default_value_t = SecretsScopeArg::Cluster)]
    secrets_scope: SecretsScopeArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SecretsScopeArg {
    Cluster,
    CredentialsNamespace,
}

/// Shorter resyncs would mostly spend the upstreams' rate limits.
const MIN_RESYNC: Duration = Duration::from_secs(10);

fn parse_resync(text: &str) -> Result<Duration, String> {
    let interval = parse_interval(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as 10m or 1h30m"))?;
    if interval < MIN_RESYNC {
        return Err(format!("must be at least {}s", MIN_RESYNC.as_secs()));
    }
    Ok(interval)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_interval(text)
        .filter(|t| !t.is_zero())
        .ok_or_else(|| format!("{text:?} is not a duration such as 5s"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate (a number ≥ 0, e.g. 50)")),
    }
}

impl RunArgs {
    fn config(&self) -> Result<RunConfig, String> {
        if self.secrets_scope == SecretsScopeArg::CredentialsNamespace && self.namespace.is_some() {
            return Err("--secrets-scope credentials-namespace works through ClusterConnections, which need a cluster-wide operator: drop --namespace".into());
        }
        let leader_election = if self.leader_election {
            let namespace = self
                .leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .ok_or("--leader-election needs --leader-election-namespace (or POD_NAMESPACE)")?;
            // Unique per process, so a restarted pod never mistakes an old lease for its own.
            let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "accessplane".into());
            let identity = format!("{pod}-{:08x}", rand::random::<u32>());
            let timing = LeaseTiming {
                duration: self.leader_election_lease_duration,
                renew_every: self.leader_election_renew_period,
            };
            timing.check().map_err(|e| {
                format!("--leader-election-lease-duration/--leader-election-renew-period: {e}")
            })?;
            Some(LeaderElection {
                namespace,
                lease_name: self.leader_election_lease.clone(),
                identity,
                timing,
            })
        } else {
            None
        };
        Ok(RunConfig {
            namespace: self.namespace.clone(),
            concurrency: self.concurrency,
            timing: Timing {
                resync: self.resync_interval,
                resync_rate: self.resync_rate,
                ..Timing::default()
            },
            metrics_addr: self.metrics_addr,
            install_crds: self.install_crds,
            leader_election,
            credentials: Credentials {
                namespace: self
                    .credentials_namespace
                    .clone()
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| Credentials::default().namespace),
                scope: match self.secrets_scope {
                    SecretsScopeArg::Cluster => SecretsScope::Cluster,
                    SecretsScopeArg::CredentialsNamespace => SecretsScope::CredentialsNamespace,
                },
            },
        })
    }
}

fn main() -> ExitCode {
    // reqwest and kube are built without a default TLS crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Usage errors exit 1, not clap's 2: for `plan`, 2 means "changes present".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run(args) => run(args),
        Command::Crds { dir: None } => {
            print!("{}", crds::yaml_stream());
            ExitCode::SUCCESS
        }
        Command::Crds { dir: Some(dir) } => match crds::write_dir(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(format!("writing {}: {error}", dir.display())),
        },
        Command::Docs { dir } => match reference::write_dir(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(format!("writing {}: {error}", dir.display())),
        },
        Command::Plan(args) => cli_command("plan", command::run(args.command())),
        Command::Import(args) => cli_command("import", import_command::run(*args)),
        Command::Version => {
            println!("{}", version());
            ExitCode::SUCCESS
        }
        Command::Probe { url, timeout } => probe(&url, timeout),
    }
}

fn probe(url: &str, timeout: Duration) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(runtime::probe::probe(url, timeout))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(body) => {
            println!("{url}: {body}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(error),
    }
}

/// A command that prints its result on stdout (`name`: for errors before it runs), on a
/// one-thread runtime, with warnings only on stderr; its exit code.
fn cli_command(name: &str, command: impl std::future::Future<Output = u8>) -> ExitCode {
    if let Err(error) = telemetry::init(LogFormat::Text, "warn") {
        return fail(error);
    }
    let code = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(command))
        .unwrap_or_else(|error| {
            eprintln!("accessplane {name}: {error}");
            1
        });
    ExitCode::from(code)
}

fn run(args: RunArgs) -> ExitCode {
    if let Err(error) = telemetry::init(args.log_format, &args.log_level) {
        return fail(error);
    }
    let config = match args.config() {
        Ok(config) => config,
        Err(error) => return fail(error),
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            let result = rt.block_on(runtime::run(config)).map_err(|e| e.to_string());
            // Exit now (a replica that lost its lease must not linger), not after
            // whatever blocking work is still running.
            rt.shutdown_timeout(Duration::from_millis(500));
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Through the logger, so JSON log pipelines see why the operator stopped.
            tracing::error!(%error, "accessplane stopped");
            ExitCode::FAILURE
        }
    }
}

fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("accessplane: {error}");
    ExitCode::FAILURE
}

/// The crate version, plus the commit when the build set `ACCESSPLANE_GIT_SHA`.
fn version() -> String {
    let version = env!("CARGO_PKG_VERSION");
    match option_env!("ACCESSPLANE_GIT_SHA") {
        Some(sha) if !sha.is_empty() => format!("accessplane {version} ({sha})"),
        _ => format!("accessplane {version}"),
    }
}

/// jemalloc instead of glibc's malloc: at 10,000 resources it peaked 6 MiB lower than
/// glibc with `MALLOC_ARENA_MAX=2` (84 → 78 MiB) and spent ~20 % less CPU per no-op
/// reconcile (docs/src/performance.md); mimalloc measured worse (130 MiB).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One arena is plenty for a 4-worker operator, and freed pages go back to the OS at once
/// instead of after ten seconds: at 10,000 resources the peak fell 79 → 71 MiB with no
/// measurable CPU cost per reconcile (two arenas and a 1 s decay had been tried first).
/// No per-thread caches: another MiB less at 10,000, within the noise in CPU.
/// `_RJEM_MALLOC_CONF` in the environment still overrides these.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] =
    b"background_thread:true,narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0,tcache:false\0";

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The help texts' pointers into the guide name pages that exist.
    #[test]
    fn help_points_at_pages_of_the_guide() {
        use clap::CommandFactory;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let notes =
            std::fs::read_to_string(root.join("charts/accessplane/templates/NOTES.txt")).unwrap();
        let mut pages = 0;
        for text in [GUIDE_HELP, PLAN_HELP, IMPORT_HELP, notes.as_str()] {
            for word in text
                .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ';' || c == ',')
            {
                let word = word.trim_end_matches(['.', ':']);
                if word.starts_with("docs/") {
                    assert!(
                        root.join(word).is_file(),
                        "{word} is not a page of the guide"
                    );
                    pages += 1;
                }
            }
        }
        assert!(pages >= 5, "pointers found: {pages}");
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("docs/src/introduction.md"), "{help}");
        let mut plan = Cli::command();
        let plan_help = plan
            .find_subcommand_mut("plan")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(plan_help.contains("docs/src/plan.md"), "{plan_help}");
    }

    /// Parsing reads `ACCESSPLANE_*`; tests that set or depend on them run one at a time.
    static ENV: Mutex<()> = Mutex::new(());

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["accessplane", "run"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(args) => Ok(args),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn run_defaults() {
        let _env = ENV.lock().unwrap();
        let config = run_args(&[]).unwrap().config().unwrap();
        assert_eq!(config.namespace, None);
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.timing.resync, Duration::from_secs(600));
        assert_eq!(config.timing.resync_rate, 50.0);
        assert_eq!(config.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert!(!config.install_crds);
        let args = run_args(&[]).unwrap();
        assert_eq!(
            (args.log_format, args.log_level.as_str()),
            (LogFormat::Text, "info")
        );
    }

    #[test]
    fn run_flags() {
        let _env = ENV.lock().unwrap();
        let args = run_args(&[
            "--namespace=team-a",
            "--concurrency=8",
            "--resync-interval=1h30m",
            "--resync-rate=7.5",
            "--log-format=json",
            "--log-level=debug",
            "--metrics-addr=127.0.0.1:9090",
            "--install-crds",
        ])
        .unwrap();
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.log_level, "debug");
        let config = args.config().unwrap();
        assert_eq!(config.namespace.as_deref(), Some("team-a"));
        assert_eq!(config.concurrency, 8);
        assert_eq!(config.timing.resync, Duration::from_secs(5400));
        assert_eq!(config.timing.resync_rate, 7.5);
        assert_eq!(config.metrics_addr, "127.0.0.1:9090".parse().unwrap());
        assert!(config.install_crds);
    }

    #[test]
    fn run_env() {
        let _env = ENV.lock().unwrap();
        let vars = [
            ("ACCESSPLANE_NAMESPACE", "team-b"),
            ("ACCESSPLANE_CONCURRENCY", "2"),
            ("ACCESSPLANE_RESYNC_INTERVAL", "30m"),
            ("ACCESSPLANE_LOG_FORMAT", "json"),
            ("ACCESSPLANE_METRICS_ADDR", "127.0.0.1:9000"),
            ("ACCESSPLANE_INSTALL_CRDS", "true"),
        ];
        // SAFETY: every test that reads these variables holds `ENV`, and nothing else in
        // this test binary reads the environment concurrently.
        unsafe { vars.iter().for_each(|(k, v)| std::env::set_var(k, v)) };
        let parsed = run_args(&[]);
        let flag_wins = run_args(&["--concurrency=6"]);
        unsafe { vars.iter().for_each(|(k, _)| std::env::remove_var(k)) };

        let args = parsed.unwrap();
        assert_eq!(args.log_format, LogFormat::Json);
        let config = args.config().unwrap();
        assert_eq!(config.namespace.as_deref(), Some("team-b"));
        assert_eq!(config.concurrency, 2);
        assert_eq!(config.timing.resync, Duration::from_secs(1800));
        assert_eq!(config.metrics_addr, "127.0.0.1:9000".parse().unwrap());
        assert!(config.install_crds);
        assert_eq!(flag_wins.unwrap().concurrency, 6);
    }

    #[test]
    fn run_rejects_bad_values() {
        let _env = ENV.lock().unwrap();
        assert!(run_args(&["--resync-interval=soon"]).is_err());
        assert!(run_args(&["--resync-interval=5s"]).is_err());
        assert!(run_args(&["--concurrency=0"]).is_err());
        assert!(run_args(&["--resync-rate=-1"]).is_err());
        assert!(run_args(&["--resync-rate=fast"]).is_err());
        assert!(run_args(&["--log-format=xml"]).is_err());
        assert!(run_args(&["--metrics-addr=nowhere"]).is_err());
    }

    #[test]
    fn crds_and_version_parse() {
        let cli = Cli::try_parse_from(["accessplane", "crds", "--dir", "out"]).unwrap();
        assert!(
            matches!(cli.command, Command::Crds { dir: Some(d) } if d == std::path::Path::new("out"))
        );
        assert!(matches!(
            Cli::try_parse_from(["accessplane", "version"])
                .unwrap()
                .command,
            Command::Version
        ));
        let cli = Cli::try_parse_from(["accessplane", "docs", "--dir", "ref"]).unwrap();
        assert!(matches!(cli.command, Command::Docs { dir } if dir == std::path::Path::new("ref")));
        assert!(Cli::try_parse_from(["accessplane", "docs"]).is_err());
        assert!(version().starts_with(concat!("accessplane ", env!("CARGO_PKG_VERSION"))));
    }
}
