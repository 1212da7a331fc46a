//! Helpers for the server integration tests: start the real `indus serve` binary on an
//! ephemeral port with a fixture model, talk to it over real HTTP, read its metrics.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub const MODEL_NAME: &str = "tiny";

/// Flags (pairs) every test server gets unless overridden: a tiny context and cache so
/// tests stay fast.
pub const SMALL: &[&str] = &[
    "--max-model-len",
    "256",
    "--num-kv-blocks",
    "64",
    "--block-size",
    "16",
    "--served-model-name",
    MODEL_NAME,
];

pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    pub base: String,
    /// `--metrics-port`'s address, when the server has one.
    pub metrics_addr: Option<SocketAddr>,
    /// The key [`Self::metrics`] sends (on the API port, /metrics needs one when keys are set).
    pub metrics_key: Option<String>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// `indus serve tests/fixtures/tiny-llama` with [`SMALL`] and `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_model(&indus::loader::repo_fixture("tiny-llama"), extra, env)
    }

    /// `indus serve MODEL` (any model directory) with [`SMALL`] and `extra` flags.
    pub fn start_model(model: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_cmd(Command::new(env!("CARGO_BIN_EXE_indus")), model, extra, env)
    }

    /// The tiny fixture server run under `ulimit -n limit` (soft and hard), as on a host
    /// whose open-file limit cannot be raised.
    pub fn start_with_fd_limit(limit: u64, extra: &[&str]) -> Self {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_indus"),
        ]);
        Self::start_cmd(cmd, &indus::loader::repo_fixture("tiny-llama"), extra, &[])
    }

    /// `cmd` (the binary, or a wrapper exec'ing it with the arguments that follow) with
    /// `serve MODEL`, [`SMALL`] and `extra`.
    fn start_cmd(
        mut cmd: Command,
        model: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        init_tls();
        let model = model.to_path_buf();
        cmd.arg("serve")
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", "0", "--log-format", "json"])
            .args(defaults_not_in(extra))
            .args(extra)
            .env_remove("INDUS_API_KEYS")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn indus serve");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = ready_addr(&line) {
                        let _ = tx.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server never logged ready; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        let metrics_addr = logs
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| logged_addr(l, "metrics listening"));
        Self {
            child,
            base: format!("http://{addr}"),
            addr,
            metrics_addr,
            metrics_key: None,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// An OpenAI SDK client for this server.
    pub fn openai(&self) -> async_openai::Client<async_openai::config::OpenAIConfig> {
        self.openai_with_key("unused")
    }

    pub fn openai_with_key(
        &self,
        key: &str,
    ) -> async_openai::Client<async_openai::config::OpenAIConfig> {
        async_openai::Client::with_config(
            async_openai::config::OpenAIConfig::new()
                .with_api_base(self.url("/v1"))
                .with_api_key(key),
        )
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The key [`Self::metrics`] sends from now on.
    pub fn with_metrics_key(mut self, key: &str) -> Self {
        self.metrics_key = Some(key.to_string());
        self
    }

    /// GET /metrics: on `--metrics-port` when the server has one, else on the API port
    /// (with [`Self::metrics_key`]).
    pub async fn metrics(&self) -> String {
        let url = match self.metrics_addr {
            Some(a) => format!("http://{a}/metrics"),
            None => self.url("/metrics"),
        };
        let mut req = reqwest::Client::new().get(url);
        if let Some(k) = &self.metrics_key {
            req = req.bearer_auth(k);
        }
        req.send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one sample, e.g. `indus_kv_cache_free_blocks` or
    /// `indus_requests_total{finish_reason="stop",status="200"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        metric_value(&self.metrics().await, sample)
    }

    /// Polls a metric until `pred` holds (or panics after `timeout`).
    pub async fn wait_metric(
        &self,
        sample: &str,
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(sample).await.unwrap_or(f64::NAN);
            if pred(v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{sample} stayed at {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// [`SMALL`] less the flags `extra` sets itself.
fn defaults_not_in(extra: &[&str]) -> Vec<&'static str> {
    SMALL
        .chunks(2)
        .filter(|pair| !extra.contains(&pair[0]))
        .flatten()
        .copied()
        .collect()
}

/// reqwest is built with `rustls-no-provider` (for `indus bench`): every process that makes a
/// client must pick the crypto provider, even for plain HTTP.
/// A fresh directory `indus-{tag}-{pid}` under the temp dir with `keys.toml` holding `keys`:
/// (the directory, the keys file). Tests running at once need different tags.
pub fn keys_file(tag: &str, keys: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("indus-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.toml");
    std::fs::write(&path, keys).unwrap();
    (dir, path)
}

/// A completions body for the served fixture that always writes `max_tokens` tokens.
pub fn completion(max_tokens: usize) -> serde_json::Value {
    serde_json::json!({"model": MODEL_NAME, "prompt": "Hi", "max_tokens": max_tokens,
        "ignore_eos": true})
}

pub fn init_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The address in a JSON "ready" log line.
fn ready_addr(line: &str) -> Option<SocketAddr> {
    logged_addr(line, "ready")
}

/// The `addr` field of a JSON log line whose message is `message`.
fn logged_addr(line: &str, message: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != message {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok())?
    })
}

/// POSTs JSON; returns status, headers and the body parsed as JSON (Null if not JSON).
pub async fn post_json(
    url: &str,
    body: &serde_json::Value,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let (status, headers, text) = post(url, body, key).await;
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// POSTs JSON and returns the status and the body as text (for streamed answers).
pub async fn post_text(url: &str, body: &serde_json::Value, key: Option<&str>) -> (u16, String) {
    let (status, _, text) = post(url, body, key).await;
    (status, text)
}

async fn post(
    url: &str,
    body: &serde_json::Value,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    init_tls();
    let mut req = reqwest::Client::new().post(url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

/// Asserts OpenAI's error shape and returns the error object.
pub fn assert_error_shape(body: &serde_json::Value) -> &serde_json::Map<String, serde_json::Value> {
    let err = body
        .get("error")
        .and_then(|e| e.as_object())
        .unwrap_or_else(|| panic!("no error object in {body}"));
    assert!(err.get("message").is_some_and(|m| m.is_string()), "{body}");
    assert!(err.get("type").is_some_and(|m| m.is_string()), "{body}");
    assert!(err.contains_key("param"), "{body}");
    assert!(err.contains_key("code"), "{body}");
    err
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}
