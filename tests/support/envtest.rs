//! The real-apiserver tier (envtest style): a real `kube-apiserver` and `etcd`, found
//! through `KUBEBUILDER_ASSETS` (a folder holding both, as `setup-envtest` lays it out;
//! `kubectl` and `helm` are taken from there too, else from `PATH`).
//!
//! One apiserver serves the whole test binary ([`envtest`]; a test that acts
//! cluster-wide takes one of its own, [`dedicated_envtest`]): it starts on first use
//! (5-15 s here) on free loopback ports in `$TMPDIR/accessplane-envtest-<pid>-<n>`
//! (etcd's data in `/dev/shm` when there is one), with a self-signed serving certificate, a token-file
//! admin (`system:masters`), `--authorization-mode=RBAC`, a service-account issuer (so
//! TokenRequest works and a test can act as a ServiceAccount) and a Metadata-level audit
//! log (each request with its user and User-Agent). Both processes die with the test
//! binary, panics included: they are spawned, with `PR_SET_PDEATHSIG`, by a thread
//! that lives as long as the [`Envtest`]. Tests share the cluster, so each uses its own namespaces
//! (namespaces are never finalized: no controller-manager) and its own cluster-scoped
//! names. Without `KUBEBUILDER_ASSETS` every test of the tier skips with one line.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The admin's bearer token (token file).
const ADMIN_TOKEN: &str = "envtest-admin-token";
/// A second identity of the token file, for the operator itself: its requests can be
/// told apart from the test's in the audit log. RBAC gives it nothing by itself.
pub const OPERATOR_USER: &str = "accessplane-operator";
const OPERATOR_TOKEN: &str = "envtest-operator-token";

/// How long the apiserver may take to answer `/readyz` with `ok`.
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Envtest {
    pub url: String,
    pub dir: PathBuf,
    ca_pem: String,
    kubectl: PathBuf,
    helm: Option<PathBuf>,
    /// Dropping it stops the apiserver and etcd (the shared one is never dropped).
    stop: Option<std::sync::mpsc::Sender<()>>,
    owner: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Envtest {
    fn drop(&mut self) {
        // The owner thread sees the channel close, kills both processes and cleans up.
        self.stop.take();
        if let Some(owner) = self.owner.take() {
            let _ = owner.join();
        }
    }
}

static SHARED: OnceLock<Envtest> = OnceLock::new();

/// The shared real apiserver, or `None` (the test skips, saying so in one line) when
/// `KUBEBUILDER_ASSETS` is unset. Panics when it is set but the apiserver cannot start.
pub fn envtest() -> Option<&'static Envtest> {
    let Some(assets) = assets() else {
        eprintln!(
            "skipped: KUBEBUILDER_ASSETS is not set (the real-apiserver tier needs a folder with kube-apiserver and etcd; see docs/src/development.md)"
        );
        return None;
    };
    Some(SHARED.get_or_init(|| start(&assets)))
}

/// Held by the tier's heaviest tests (an apiserver of their own, timing-sensitive
/// hand-overs) so that they run one at a time on a small machine.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().await
}

/// An apiserver of the caller's own, stopped when dropped: for tests that act
/// cluster-wide (an operator watching all namespaces would also reconcile the other
/// tests' resources on the shared one). `None` as for [`envtest`].
pub fn dedicated_envtest() -> Option<Envtest> {
    let Some(assets) = assets() else {
        eprintln!("skipped: KUBEBUILDER_ASSETS is not set (the real-apiserver tier)");
        return None;
    };
    Some(start(&assets))
}

fn assets() -> Option<PathBuf> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(dir))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `name` from the assets folder, else from `PATH`.
fn tool(assets: &Path, name: &str) -> Option<PathBuf> {
    let local = assets.join(name);
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Removes the folders of earlier runs whose process is gone.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("accessplane-envtest-"))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A P-256 key pair for the service-account issuer: (PKCS#8 private key PEM, SPKI public PEM).
fn service_account_keys() -> (String, String) {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // SubjectPublicKeyInfo for id-ecPublicKey / prime256v1, then the uncompressed point.
    let mut spki = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    spki.extend_from_slice(pair.public_key().as_ref());
    (pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki))
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";

/// Spawns `cmd` so that it gets SIGKILL when the spawning thread ends.
fn spawn_tied(mut cmd: Command, log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("envtest: cannot start {:?}: {e}", cmd.get_program()))
}

fn start(assets: &Path) -> Envtest {
    let assets = assets.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    // The owner thread spawns both processes and lives until the Envtest is dropped
    // (the shared one: until the test binary exits). PR_SET_PDEATHSIG fires when *it*
    // ends, so the processes never outlive the tests, however they end.
    let owner = std::thread::Builder::new()
        .name("envtest-owner".into())
        .spawn(move || {
            let started = std::panic::catch_unwind(|| launch(&assets));
            let (mut children, dirs, stopped) = match started {
                Ok((mut env, children)) => {
                    let (stop, stopped) = std::sync::mpsc::channel::<()>();
                    env.stop = Some(stop);
                    let dirs = env.dirs();
                    tx.send(Ok(env)).unwrap();
                    (children, dirs, stopped)
                }
                Err(panic) => {
                    let _ = tx.send(Err(panic));
                    return;
                }
            };
            // Returns once the sender is dropped.
            let _ = stopped.recv();
            for child in children.iter_mut().rev() {
                let _ = child.kill();
                let _ = child.wait();
            }
            for dir in dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
        })
        .unwrap();
    match rx.recv().expect("envtest owner thread") {
        Ok(mut env) => {
            env.owner = Some(owner);
            env
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn launch(assets: &Path) -> (Envtest, Vec<Child>) {
    let apiserver_bin = assets.join("kube-apiserver");
    let etcd_bin = assets.join("etcd");
    for bin in [&apiserver_bin, &etcd_bin] {
        assert!(
            bin.is_file(),
            "KUBEBUILDER_ASSETS={} has no {}",
            assets.display(),
            bin.file_name().unwrap().to_string_lossy()
        );
    }
    let parent = std::env::temp_dir();
    sweep_stale(&parent);
    let instance = format!(
        "accessplane-envtest-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let dir = parent.join(&instance);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let shm = Path::new("/dev/shm");
    let etcd_data = if shm.is_dir() {
        shm.join(&instance)
    } else {
        dir.join("etcd")
    };
    if shm.is_dir() {
        sweep_stale(shm);
    }
    let _ = std::fs::remove_dir_all(&etcd_data);

    let (private, public) = service_account_keys();
    std::fs::write(dir.join("sa.key"), private).unwrap();
    std::fs::write(dir.join("sa.pub"), public).unwrap();
    std::fs::write(
        dir.join("tokens.csv"),
        format!(
            "{ADMIN_TOKEN},envtest-admin,envtest-admin-uid,\"system:masters\"\n\
             {OPERATOR_TOKEN},{OPERATOR_USER},{OPERATOR_USER}-uid,\"system:authenticated\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).unwrap();

    let (client_port, peer_port, secure_port) = (free_port(), free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = Command::new(&etcd_bin);
    etcd.arg("--data-dir")
        .arg(&etcd_data)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .args(["--log-level", "warn"]);
    let etcd = spawn_tied(etcd, &dir.join("etcd.log"));

    let d = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let mut apiserver = Command::new(&apiserver_bin);
    apiserver
        .args(["--etcd-servers", &client_url])
        .args([
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
        ])
        .args(["--secure-port", &secure_port.to_string()])
        .args(["--cert-dir", &d("certs")])
        .args(["--service-cluster-ip-range", "10.0.0.0/24"])
        .args(["--service-account-issuer", "https://kubernetes.default.svc"])
        .args(["--service-account-key-file", &d("sa.pub")])
        .args(["--service-account-signing-key-file", &d("sa.key")])
        .args(["--token-auth-file", &d("tokens.csv")])
        .args(["--authorization-mode", "RBAC"])
        .args(["--endpoint-reconciler-type", "none"])
        .args(["--audit-policy-file", &d("audit-policy.yaml")])
        .args(["--audit-log-path", &d("audit.log")])
        .args(["--audit-log-format", "json"])
        .args(["--audit-log-mode", "blocking"])
        .args(["-v", "1"]);
    let apiserver = spawn_tied(apiserver, &dir.join("apiserver.log"));
    let mut children = vec![etcd, apiserver];

    let url = format!("https://127.0.0.1:{secure_port}");
    let deadline = Instant::now() + START_TIMEOUT;
    let ca_pem = loop {
        for child in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "envtest: {:?} exited with {status}; logs in {}:\n{}",
                    child.id(),
                    dir.display(),
                    tail(&dir.join("apiserver.log")) + &tail(&dir.join("etcd.log"))
                );
            }
        }
        if let Some(ca) = serving_ca(&dir)
            && ready(&url, &ca)
        {
            break ca;
        }
        assert!(
            Instant::now() < deadline,
            "envtest: the apiserver was not ready within {START_TIMEOUT:?}; log:\n{}",
            tail(&dir.join("apiserver.log"))
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let env = Envtest {
        url,
        ca_pem,
        kubectl: tool(assets, "kubectl").expect("kubectl in KUBEBUILDER_ASSETS or PATH"),
        helm: tool(assets, "helm"),
        dir,
        stop: None,
        owner: None,
    };
    std::fs::write(
        env.kubeconfig_path(),
        env.kubeconfig_text(ADMIN_TOKEN, "default"),
    )
    .unwrap();
    eprintln!(
        "envtest: kube-apiserver ready at {} ({})",
        env.url,
        env.dir.display()
    );
    (env, children)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n") + "\n"
}

/// The CA of the self-signed serving certificate: the last certificate in apiserver.crt.
fn serving_ca(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("certs/apiserver.crt")).ok()?;
    let start = text.rfind("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    Some(format!("{}-----END CERTIFICATE-----\n", &text[start..end]))
}

/// `GET /readyz` with the admin token answers `ok` (blocking, for the owner thread).
fn ready(url: &str, ca_pem: &str) -> bool {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Ok(ca) = reqwest::Certificate::from_pem(ca_pem.as_bytes()) else {
            return false;
        };
        let Ok(client) = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(2))
            .build()
        else {
            return false;
        };
        match client
            .get(format!("{url}/readyz"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
        {
            Ok(r) => r.status().is_success() && r.text().await.is_ok_and(|t| t == "ok"),
            Err(_) => false,
        }
    })
}

impl Envtest {
    /// The folders to remove when this apiserver stops: its own and etcd's data.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.dir.clone()];
        if let Some(name) = self.dir.file_name() {
            dirs.push(Path::new("/dev/shm").join(name));
        }
        dirs
    }

    /// A kubeconfig for `token` whose context's namespace is `namespace`.
    pub fn kubeconfig_text(&self, token: &str, namespace: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\n\
             users:\n- name: user\n  user:\n    token: {token}\n\
             contexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: user\n    namespace: {namespace}\n\
             current-context: envtest\n",
            url = self.url
        )
    }

    /// The admin kubeconfig (for kubectl and helm).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// Writes a kubeconfig for `token` to a fresh file and returns its path.
    pub fn write_kubeconfig(&self, token: &str, namespace: &str) -> PathBuf {
        let path = self
            .dir
            .join(format!("kubeconfig-{}", rand::random::<u32>()));
        std::fs::write(&path, self.kubeconfig_text(token, namespace)).unwrap();
        path
    }

    /// The operator's own token identity (see [`OPERATOR_USER`]).
    pub fn operator_token(&self) -> &'static str {
        OPERATOR_TOKEN
    }

    /// A client (for the current tokio runtime) authenticated with `token`.
    pub async fn client_with_token(&self, token: &str) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig_text(token, "default")).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// An admin client (`system:masters`) for the current tokio runtime.
    pub async fn admin(&self) -> kube::Client {
        self.client_with_token(ADMIN_TOKEN).await
    }

    /// A token of ServiceAccount `namespace/name` (TokenRequest, one hour).
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: kube::Api<ServiceAccount> = kube::Api::namespaced(self.admin().await, namespace);
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "spec": {"audiences": [], "expirationSeconds": 3600}
        }))
        .unwrap();
        let response = api
            .create_token_request(name, &Default::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
        response.status.expect("TokenRequest status").token
    }

    /// Runs kubectl with the admin kubeconfig; returns the whole output.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run(&self.kubectl, args, &self.kubeconfig_path(), stdin)
    }

    /// Runs kubectl and panics unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        succeeded(&self.kubectl, args, self.kubectl(args, stdin))
    }

    /// Server-side applies the committed CRDs (`crds/`, but the files named in `except`)
    /// and waits until each is Established.
    pub fn install_crds_except(&self, except: &[&str]) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|f| f.unwrap().path())
            .filter(|f| !except.iter().any(|name| f.ends_with(name)))
            .collect();
        files.sort();
        // One apply and one wait for all: `-f` once per file.
        let with_files = |verb: &[&str]| {
            let mut args: Vec<&str> = verb.to_vec();
            for file in &files {
                args.extend(["-f", file.to_str().unwrap()]);
            }
            self.kubectl_ok(&args, None);
        };
        with_files(&["apply", "--server-side", "--force-conflicts"]);
        with_files(&["wait", "--for=condition=Established", "--timeout=60s"]);
    }

    /// The `kubectl` binary (for callers that run it with their own stdin/stdout, e.g.
    /// a large stream whose output would fill a pipe).
    pub fn kubectl_binary(&self) -> &Path {
        &self.kubectl
    }

    /// The `helm` binary, or `None` (the caller skips, saying so) when there is none.
    pub fn helm_binary(&self) -> Option<&Path> {
        if self.helm.is_none() {
            eprintln!("skipped: no helm in KUBEBUILDER_ASSETS or PATH");
        }
        self.helm.as_deref()
    }

    /// Runs helm with the admin kubeconfig.
    pub fn helm(&self, args: &[&str]) -> Output {
        let helm = self.helm.as_ref().expect("helm");
        let mut cmd = Command::new(helm);
        // Helm's caches and config stay inside the tier's folder.
        for (var, sub) in [
            ("HELM_CACHE_HOME", "helm/cache"),
            ("HELM_CONFIG_HOME", "helm/config"),
            ("HELM_DATA_HOME", "helm/data"),
        ] {
            cmd.env(var, self.dir.join(sub));
        }
        output(cmd, args, &self.kubeconfig_path(), None)
    }

    /// Runs helm and panics unless it succeeds; returns stdout.
    pub fn helm_ok(&self, args: &[&str]) -> String {
        succeeded(self.helm.as_ref().unwrap(), args, self.helm(args))
    }

    /// The audit log's events so far (one JSON object per line).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn run(bin: &Path, args: &[&str], kubeconfig: &Path, stdin: Option<&str>) -> Output {
    output(Command::new(bin), args, kubeconfig, stdin)
}

/// Runs `cmd` with `args` against `kubeconfig`, feeding `stdin` if any; its output.
pub fn output(mut cmd: Command, args: &[&str], kubeconfig: &Path, stdin: Option<&str>) -> Output {
    use std::io::Write;
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn succeeded(bin: &Path, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{}{}",
        bin.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A name unique in this run, for namespaces and cluster-scoped objects.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}
