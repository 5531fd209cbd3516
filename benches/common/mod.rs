//! The operator process, shared by the benchmarks (`benches/scale.rs`,
//! `benches/real_apiserver.rs`): the real `accessplane run` binary as a child process,
//! with what the benchmarks read off it (peak RSS, CPU time, reconcile counters).
//!
//! `ACCESSPLANE_BENCH_WRAPPER="heaptrack"` (any command prefix, split on spaces) runs the
//! operator under a profiler; memory and CPU figures then describe the wrapper's process.
// Each benchmark uses part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The operator as a child process.
pub struct Operator {
    child: Child,
    metrics_url: String,
}

impl Operator {
    /// `accessplane run` with default flags (warnings only in its log), talking to the
    /// cluster of `kubeconfig`; stdout and stderr go to `log`.
    pub fn spawn(kubeconfig: &Path, log: &Path) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().unwrap().port()
        };
        let log = std::fs::File::create(log).expect("operator log");
        let operator = env!("CARGO_BIN_EXE_accessplane");
        let wrapper = std::env::var("ACCESSPLANE_BENCH_WRAPPER").unwrap_or_default();
        let mut command = match wrapper.split_whitespace().collect::<Vec<_>>().split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(operator);
                c
            }
            None => Command::new(operator),
        };
        let child = command
            .args([
                "run",
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--log-level",
                "warn",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env_remove("RUST_LOG")
            .env_remove("ACCESSPLANE_RESYNC_INTERVAL")
            .env_remove("ACCESSPLANE_CONCURRENCY")
            .env_remove("ACCESSPLANE_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn the operator");
        Self {
            child,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// utime + stime in seconds.
    pub fn cpu_seconds(&self, ticks: f64) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // After the command name: state is field 3, utime 14, stime 15.
        (t(11) + t(12)) / ticks
    }

    /// `accessplane_reconcile_total` over all managed kinds: (all results, `ok` only);
    /// `None` while the metrics server is not up.
    pub async fn reconciles(&self, http: &reqwest::Client) -> Option<(u64, u64)> {
        let text = http
            .get(&self.metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let count = |ok_only: bool| {
            text.lines()
                .filter(|l| l.starts_with("accessplane_reconcile_total{"))
                .filter(|l| !ok_only || l.contains("result=\"ok\""))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Some((count(false), count(true)))
    }

    /// How it ended, once it has (e.g. `signal: 9 (SIGKILL)`).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 15 s.
    pub async fn stop(mut self) {
        // Once reaped, its pid may belong to another process.
        if !self.alive() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..150 {
            if !self.alive() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat` CPU times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A benchmark that panics leaves no operator behind (after `stop` this is a no-op).
impl Drop for Operator {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The command line every bench takes: `--bench` (what `cargo bench` passes: the full
/// set; without it, as under `cargo test --all-targets`, a smoke run), `--n N`, and one
/// option of the bench's own (`--kind`, `--visibility`). Anything else cargo or libtest
/// may pass (filters, `--nocapture`, ...) is ignored.
pub struct BenchArgs {
    pub full: bool,
    pub n: Option<usize>,
    pub option: Option<String>,
}

pub fn parse_args(option: &str) -> Result<BenchArgs, String> {
    let mut args = BenchArgs {
        full: false,
        n: None,
        option: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => args.full = true,
            "--n" => {
                let v = it.next().ok_or("--n needs a value")?;
                args.n = Some(v.parse().map_err(|_| format!("bad --n {v}"))?);
            }
            flag if flag == option => {
                args.option = Some(it.next().ok_or(format!("{option} needs a value"))?);
            }
            _ => {}
        }
    }
    Ok(args)
}
