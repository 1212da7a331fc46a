//! One streaming request to an OpenAI-compatible endpoint, timed chunk by chunk: the SSE
//! parser, the request bodies (`/v1/completions` with text or token-id prompts,
//! `/v1/chat/completions` with one user message) and the per-request record.

use super::dataset::{Prompt, SampleRequest};
use super::metrics::RequestRecord;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Which OpenAI API the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Completions,
    Chat,
}

impl ApiKind {
    /// Chat when the path names chat completions, else completions.
    pub fn from_path(path: &str) -> Self {
        if path.contains("chat") {
            ApiKind::Chat
        } else {
            ApiKind::Completions
        }
    }
}

/// What every request shares.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    pub url: String,
    pub kind: ApiKind,
    pub model: String,
    pub api_key: Option<String>,
    pub ignore_eos: bool,
    pub temperature: f32,
    /// JSON object merged into every request body (server-specific parameters).
    pub extra_body: Option<serde_json::Map<String, serde_json::Value>>,
}

impl RequestSettings {
    /// The JSON body of one request.
    pub fn body(&self, req: &SampleRequest) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), self.model.clone().into());
        match self.kind {
            ApiKind::Completions => {
                let prompt = match &req.prompt {
                    Prompt::Text(t) => serde_json::Value::from(t.as_str()),
                    Prompt::Tokens(ids) => serde_json::Value::from(ids.clone()),
                };
                body.insert("prompt".into(), prompt);
            }
            ApiKind::Chat => {
                let text = match &req.prompt {
                    Prompt::Text(t) => t.clone(),
                    // Never built for chat (datasets make text); keep the request valid anyway.
                    Prompt::Tokens(ids) => ids
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                };
                body.insert(
                    "messages".into(),
                    serde_json::json!([{"role": "user", "content": text}]),
                );
            }
        }
        body.insert("max_tokens".into(), req.output_len.into());
        body.insert("temperature".into(), f64::from(self.temperature).into());
        body.insert("stream".into(), true.into());
        body.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
        if self.ignore_eos {
            body.insert("ignore_eos".into(), true.into());
        }
        if let Some(extra) = &self.extra_body {
            for (k, v) in extra {
                body.insert(k.clone(), v.clone());
            }
        }
        serde_json::to_vec(&body).expect("a JSON map serializes")
    }
}

/// The HTTP client: keep-alive pool without limit, no proxy, Nagle off.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    // rustls is built with ring only; make it the process default once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(timeout)
        .build()?)
}

/// A client that opens a new connection for every request (no idle pool), for retries; one
/// per process. Its timeout is `bench serve`'s default `--request-timeout`.
fn fresh_connection_client() -> anyhow::Result<reqwest::Client> {
    static FRESH: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = FRESH.get() {
        return Ok(c.clone());
    }
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(3600))
        .build()?;
    Ok(FRESH.get_or_init(|| c).clone())
}

/// An incremental Server-Sent Events parser: bytes in, `data` payloads out.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; calls `on_event` with each complete event's data.
    pub fn feed(&mut self, mut chunk: &[u8], on_event: &mut impl FnMut(&[u8])) {
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = chunk.split_at(pos);
            chunk = &rest[1..];
            if self.line.is_empty() {
                self.line_done(head, on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.line_done(&line, on_event);
                line.clear();
                self.line = line;
            }
        }
        self.line.extend_from_slice(chunk);
    }

    /// End of stream: an event not closed by a blank line still counts.
    pub fn finish(&mut self, on_event: &mut impl FnMut(&[u8])) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, on_event);
        }
        self.line_done(b"", on_event);
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                on_event(&self.data);
                self.data.clear();
                self.has_data = false;
            }
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(rest);
            self.has_data = true;
        }
        // Comments (":…") and other fields (event, id, retry) carry no tokens.
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<usize>,
    #[serde(default)]
    completion_tokens: Option<usize>,
}

/// What a response's events add up to.
#[derive(Default)]
struct StreamState {
    first: Option<Instant>,
    last: Option<Instant>,
    itl: Vec<f64>,
    chunks: usize,
    prompt_tokens: Option<usize>,
    completion_tokens: Option<usize>,
    finished: bool,
    done: bool,
    error: Option<String>,
}

impl StreamState {
    fn event(&mut self, data: &[u8], now: Instant) {
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        let chunk: Chunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                if self.error.is_none() {
                    let shown = String::from_utf8_lossy(&data[..data.len().min(200)]);
                    self.error = Some(format!("bad event ({e}): {shown}"));
                }
                return;
            }
        };
        if let Some(err) = chunk.error {
            self.error
                .get_or_insert_with(|| format!("server error: {err}"));
        }
        if let Some(u) = chunk.usage {
            self.prompt_tokens = u.prompt_tokens.or(self.prompt_tokens);
            self.completion_tokens = u.completion_tokens.or(self.completion_tokens);
        }
        let Some(choice) = chunk.choices.first() else {
            return;
        };
        let finish = choice.finish_reason.is_some();
        self.finished |= finish;
        let content = match (&choice.text, &choice.delta) {
            (Some(t), _) => Some(t.as_str()),
            (None, Some(d)) => d
                .content
                .as_deref()
                .or(d.reasoning_content.as_deref())
                .filter(|s| !s.is_empty()),
            (None, None) => None,
        };
        // A token's chunk; an empty closing chunk that only carries finish_reason is not.
        let Some(content) = content else { return };
        if content.is_empty() && finish {
            return;
        }
        match self.last {
            None => self.first = Some(now),
            Some(last) => self.itl.push((now - last).as_secs_f64()),
        }
        self.last = Some(now);
        self.chunks += 1;
    }
}

/// Sends one request and times it. `t0` is the benchmark's start; the record's timestamps
/// are offsets from it.
pub async fn send(
    client: &reqwest::Client,
    settings: &RequestSettings,
    body: Vec<u8>,
    req: &SampleRequest,
    index: usize,
    t0: Instant,
) -> RequestRecord {
    let mut rec = RequestRecord {
        index,
        prompt_len: req.prompt_len,
        output_len: req.output_len,
        ..Default::default()
    };
    let start = Instant::now();
    let mut builder = client
        .post(&settings.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(key) = &settings.api_key {
        builder = builder.bearer_auth(key);
    }
    let mut st = StreamState::default();
    let outcome: Result<(), String> = async {
        let retry = builder.try_clone();
        let mut resp = match builder.send().await {
            Ok(r) => r,
            // A keep-alive connection the server had already closed: the request never got
            // an answer, so sending it again on a fresh connection is safe and counts once.
            Err(e) if never_reached_the_server(&e) && retry.is_some() => {
                rec.retries += 1;
                let again = retry.ok_or("no request to retry")?;
                // On a new connection: the pool may hold more connections the server closed.
                let (_, request) = again.build_split();
                let request = request.map_err(|e| error_chain(&e))?;
                let fresh = fresh_connection_client().map_err(|e| e.to_string())?;
                fresh.execute(request).await.map_err(|e| error_chain(&e))?
            }
            Err(e) => return Err(error_chain(&e)),
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("HTTP {status}: {}", truncate(&text, 500)));
        }
        let mut parser = SseParser::default();
        while let Some(bytes) = resp.chunk().await.map_err(|e| error_chain(&e))? {
            let now = Instant::now();
            parser.feed(&bytes, &mut |data| st.event(data, now));
        }
        let now = Instant::now();
        parser.finish(&mut |data| st.event(data, now));
        Ok(())
    }
    .await;
    let end = Instant::now();
    rec.start_s = (start - t0).as_secs_f64();
    rec.end_s = (end - t0).as_secs_f64();
    rec.latency_s = (end - start).as_secs_f64();
    rec.ttft_s = st.first.map(|f| (f - start).as_secs_f64());
    rec.first_token_s = st.first.map(|f| (f - t0).as_secs_f64());
    rec.prompt_tokens = st.prompt_tokens;
    rec.output_tokens = st.completion_tokens.unwrap_or(st.chunks);
    rec.itl_s = std::mem::take(&mut st.itl);
    rec.error = match outcome {
        Err(e) => Some(e),
        Ok(()) if st.error.is_some() => st.error.take(),
        Ok(()) if st.first.is_none() => Some(if st.done || st.finished {
            "the response had no tokens".to_string()
        } else {
            "the stream ended without data".to_string()
        }),
        Ok(()) => None,
    };
    rec.success = rec.error.is_none();
    rec
}

/// The error of a request that got no response at all: the connection failed to open, or a
/// pooled connection was closed under it ("connection closed before message completed").
fn never_reached_the_server(e: &reqwest::Error) -> bool {
    if e.is_connect() {
        return true;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(inner) = src {
        if let Some(h) = inner.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message() || h.is_canceled();
        }
        src = inner.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut |d| {
                out.push(String::from_utf8_lossy(d).into_owned())
            });
        }
        p.finish(&mut |d| out.push(String::from_utf8_lossy(d).into_owned()));
        out
    }

    /// A server that reads each request and then closes the connection without answering
    /// (what a keep-alive peer that timed the connection out looks like to the next request)
    /// for the first `drops` connections, and answers the rest with a one-token stream.
    async fn closing_server(drops: usize) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                n += 1;
                let drop_it = n <= drops;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                    }
                    if drop_it {
                        return; // closes without a byte of response
                    }
                    let body = "data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_response_is_retried_once_and_counted_once() {
        let settings = |addr: std::net::SocketAddr| RequestSettings {
            url: format!("http://{addr}/v1/completions"),
            kind: ApiKind::Completions,
            model: "m".into(),
            api_key: None,
            ignore_eos: true,
            temperature: 0.0,
            extra_body: None,
        };
        let req = SampleRequest {
            prompt: Prompt::Text("hi".into()),
            prompt_len: 1,
            output_len: 1,
        };
        let client = http_client(Duration::from_secs(10)).unwrap();
        let t0 = Instant::now();
        // One dropped connection: retried, succeeds, one record with retries = 1.
        let addr = closing_server(1).await;
        let rec = send(&client, &settings(addr), b"{}".to_vec(), &req, 0, t0).await;
        assert!(rec.success, "{:?}", rec.error);
        assert_eq!((rec.retries, rec.output_tokens), (1, 1));
        // Two in a row: retried once only, and the error is the one users saw.
        let addr = closing_server(2).await;
        let rec = send(&client, &settings(addr), b"{}".to_vec(), &req, 0, t0).await;
        assert!(!rec.success);
        assert_eq!(rec.retries, 1);
        let err = rec.error.unwrap();
        assert!(
            err.contains("connection closed before message completed"),
            "{err}"
        );
    }

    #[test]
    fn sse_events_split_anywhere() {
        let whole = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: x\r\n\r\nevent: e\ndata: l1\ndata: l2\n\ndata: [DONE]";
        let want = vec!["{\"a\":1}", "x", "l1\nl2", "[DONE]"];
        assert_eq!(events(&[whole]), want);
        for cut in 1..whole.len() {
            assert_eq!(
                events(&[&whole[..cut], &whole[cut..]]),
                want,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(events(&bytes), want);
    }

    #[test]
    fn stream_state_counts_tokens_and_usage() {
        let mut st = StreamState::default();
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        st.event(
            br#"{"choices":[{"index":0,"text":"a","finish_reason":null}]}"#,
            ms(10),
        );
        st.event(
            br#"{"choices":[{"index":0,"text":"b","finish_reason":null}]}"#,
            ms(30),
        );
        st.event(
            br#"{"choices":[{"index":0,"text":"","finish_reason":"length"}]}"#,
            ms(31),
        );
        st.event(
            br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
            ms(31),
        );
        st.event(b"[DONE]", ms(32));
        assert_eq!(st.chunks, 2);
        assert_eq!(st.itl.len(), 1);
        assert!((st.itl[0] - 0.020).abs() < 1e-9);
        assert_eq!((st.prompt_tokens, st.completion_tokens), (Some(5), Some(2)));
        assert!(st.done && st.finished && st.error.is_none());

        let mut chat = StreamState::default();
        chat.event(
            br#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            ms(1),
        );
        chat.event(
            br#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
            ms(5),
        );
        assert_eq!((chat.chunks, chat.first), (1, Some(ms(5))));
        chat.event(br#"{"error":{"message":"boom"}}"#, ms(6));
        assert!(chat.error.unwrap().contains("boom"));
    }
}
