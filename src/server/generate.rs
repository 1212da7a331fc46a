//! Handing prompts to the engine and gathering what comes back, for both endpoints. A
//! request with several prompts becomes one engine request per prompt; choice `j` of prompt
//! `i` is choice `i * n + j` of the response.

use super::error::ApiError;
use super::record::RequestRecord;
use super::state::Loaded;
use crate::engine::{CompletedRequest, OutputStream, Request, SamplingParams};
use crate::guided::CompiledGrammar;
use std::sync::Arc;

/// Validates every prompt first (so a bad second prompt never starts the first), then
/// submits them all. On an error the streams already submitted are dropped, aborting them.
pub fn submit(
    loaded: &Loaded,
    id: &str,
    prompts: Vec<Vec<u32>>,
    params: &SamplingParams,
    priority: i32,
    tenant: &Arc<str>,
    guided: Option<Arc<CompiledGrammar>>,
) -> Result<Vec<OutputStream>, ApiError> {
    let many = prompts.len() > 1;
    let mut requests = Vec::with_capacity(prompts.len());
    for (i, ids) in prompts.into_iter().enumerate() {
        let rid = if many {
            format!("{id}-{i}")
        } else {
            id.to_string()
        };
        let mut r = Request::new(rid, ids, params.clone());
        r.priority = priority;
        r.tenant = tenant.clone();
        r.guided = guided.clone();
        loaded.engine.validate(&r)?;
        requests.push(r);
    }
    requests
        .into_iter()
        .map(|r| loaded.engine.submit(r).map_err(ApiError::from))
        .collect()
}

/// Waits for every engine request to finish (or the shutdown timeout to cut them: a 503);
/// accounts tokens, finish reasons and latency.
pub async fn collect(
    streams: Vec<OutputStream>,
    rec: &mut RequestRecord,
) -> Result<Vec<CompletedRequest>, ApiError> {
    let all = futures::future::try_join_all(streams.into_iter().map(OutputStream::collect));
    let done = tokio::select! {
        r = all => r?,
        () = rec.drain().cut_signal() => return Err(ApiError::CutAtShutdown),
    };
    let mut slot = 0;
    for r in &done {
        rec.add_prompt(r.num_prompt_tokens, r.num_cached_tokens);
        let mut longest = 0;
        for c in &r.choices {
            rec.add_completion(slot, c.token_ids.len(), &c.text, c.finish_reason);
            longest = longest.max(c.token_ids.len());
            slot += 1;
        }
        rec.observe(r.times.as_ref(), longest);
    }
    Ok(done)
}
