//! Server-sent events for streamed responses: one `data: {json}` event per engine update
//! (the engine's text deltas are whole UTF-8 characters), an optional usage chunk, then
//! `data: [DONE]` — also when the shutdown timeout cuts a stream (an error event first).
//! The engine streams are owned by the response body, so a client that
//! disconnects drops them, which aborts its requests and frees their KV blocks.

use super::error::ApiError;
use super::openai::types::Usage;
use super::record::RequestRecord;
use crate::engine::{EngineError, FinishReason, OutputStream, RequestOutput};
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream, SelectAll, StreamExt};
use std::convert::Infallible;

/// Turns engine updates into an endpoint's JSON chunks.
pub trait ChunkFormat: Send + 'static {
    /// Chunks sent before any output (chat's role deltas, completions' echoed prompts).
    fn opening(&mut self) -> Vec<String>;
    /// The chunks for one update of choice `slot` (none when there is nothing to send).
    fn chunk(&mut self, slot: usize, out: &RequestOutput) -> Vec<String>;
    /// The final chunk carrying the request's usage (`stream_options.include_usage`).
    fn usage(&mut self, usage: Usage) -> String;
}

type Tagged = BoxStream<'static, (usize, Result<RequestOutput, EngineError>)>;

struct Driver<F> {
    merged: SelectAll<Tagged>,
    rec: Option<RequestRecord>,
    fmt: F,
    n: usize,
    remaining: usize,
    longest: Vec<usize>,
    include_usage: bool,
    opened: bool,
}

impl<F: ChunkFormat> Driver<F> {
    /// The next events to send; `None` once the stream is over.
    async fn next_events(&mut self) -> Option<Vec<String>> {
        self.rec.as_ref()?;
        if !self.opened {
            self.opened = true;
            let opening = self.fmt.opening();
            if !opening.is_empty() {
                return Some(opening);
            }
        }
        loop {
            let next = {
                let rec = self.rec.as_ref()?;
                tokio::select! {
                    x = self.merged.next() => Some(x),
                    () = rec.drain().cut_signal() => None,
                }
            };
            let Some(next) = next else {
                return Some(self.fail(ApiError::CutAtShutdown));
            };
            let (prompt, item) = match next {
                Some(x) => x,
                None => (0, Err(EngineError::Internal("the engine stopped".into()))),
            };
            let out = match item {
                Ok(out) if out.finish_reason != Some(FinishReason::Abort) => out,
                Ok(_) => {
                    return Some(
                        self.fail(ApiError::Unavailable("the request was aborted".into())),
                    );
                }
                Err(e) => return Some(self.fail(e.into())),
            };
            let slot = prompt * self.n + out.index;
            let rec = self.rec.as_mut()?;
            rec.add_completion(slot, out.token_ids.len(), &out.text, out.finish_reason);
            self.longest[prompt] = self.longest[prompt].max(out.num_generated_tokens);
            let mut events = self.fmt.chunk(slot, &out);
            if out.is_last() {
                rec.add_prompt(out.num_prompt_tokens, out.num_cached_tokens);
                rec.observe(out.times.as_ref(), self.longest[prompt]);
                self.remaining -= 1;
            }
            if self.remaining == 0 {
                if self.include_usage {
                    let usage =
                        Usage::new(rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens);
                    events.push(self.fmt.usage(usage));
                }
                events.push("[DONE]".into());
                if let Some(rec) = self.rec.take() {
                    rec.succeed();
                }
            }
            if !events.is_empty() {
                return Some(events);
            }
        }
    }

    /// An error after the headers went out: an error event, then `[DONE]`.
    fn fail(&mut self, e: ApiError) -> Vec<String> {
        if let Some(rec) = self.rec.take() {
            rec.fail(&e);
        }
        vec![e.to_json(), "[DONE]".into()]
    }
}

/// The streamed response for `streams` (one per prompt, each with `n` choices).
pub fn respond<F: ChunkFormat>(
    streams: Vec<OutputStream>,
    n: usize,
    mut rec: RequestRecord,
    fmt: F,
    include_usage: bool,
) -> Response {
    rec.stream = true;
    let id = rec.id.clone();
    let count = streams.len();
    let merged = stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| -> Tagged { s.map(move |x| (i, x)).boxed() }),
    );
    let driver = Driver {
        merged,
        rec: Some(rec),
        fmt,
        n,
        remaining: count,
        longest: vec![0; count],
        include_usage,
        opened: false,
    };
    let events = stream::unfold(driver, |mut d| async move {
        let events = d.next_events().await?;
        Some((events, d))
    })
    .flat_map(|events| {
        stream::iter(
            events
                .into_iter()
                .map(|data| Ok::<_, Infallible>(Event::default().data(data))),
        )
    });
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    let h = resp.headers_mut();
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v);
    }
    resp
}
