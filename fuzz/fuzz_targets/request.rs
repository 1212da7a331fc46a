//! Request bodies: bytes → the OpenAI wire types, then every check the handlers make before a
//! request is queued — shared parameter checks, output constraints (compiled, as the server
//! does before queueing), tool plans, the chat template, prompt parsing and tokenization, the
//! engine's sampling ranges and context limits. Errors are the expected answer to most
//! inputs; a panic anywhere is a bug.

#![no_main]

use indus::engine::{EngineLimits, Request};
use indus::guided::{Constraint, GrammarCompiler};
use indus::server::admission;
use indus::server::error::ApiError;
use indus::server::openai::types::{
    ChatRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest,
};
use indus::server::openai::{chat, completions, logprobs, params, structured, tokenize, tools};
use indus::tokenizer::Tokenizer;
use indus::tools::ToolCallFormat;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

/// The Llama 2 tokenizer and chat template of the tiny-llama fixture, as a server with that
/// model would hold them.
struct Model {
    tok: Arc<Tokenizer>,
    grammar: GrammarCompiler,
    limits: EngineLimits,
}

static MODEL: LazyLock<Model> = LazyLock::new(|| {
    let tok = indus_fuzz::fixture_tokenizer("tiny-llama");
    let grammar = GrammarCompiler::new(&tok, 1).expect("fuzz setup: grammar compiler");
    let limits = EngineLimits {
        max_model_len: 2048,
        vocab_size: tok.vocab_size(),
        max_waiting_requests: 64,
        hidden_size: 64,
        max_num_seqs: 8,
        block_size: 16,
    };
    Model {
        tok,
        grammar,
        limits,
    }
});

fuzz_target!(|data: &[u8]| {
    let m = &*MODEL;
    // Each body is tried as every request type: the fields that make one type fail to parse
    // are often what makes another succeed.
    if let Ok(req) = serde_json::from_slice::<ChatRequest>(data) {
        finish(chat_request(m, req));
    }
    if let Ok(req) = serde_json::from_slice::<CompletionRequest>(data) {
        finish(completion_request(m, req));
    }
    if let Ok(req) = serde_json::from_slice::<TokenizeRequest>(data) {
        finish(tokenize_request(m, req));
    }
    if let Ok(req) = serde_json::from_slice::<DetokenizeRequest>(data) {
        finish(detokenize_request(m, req));
    }
});

/// A rejection is rendered as the server would answer it.
fn finish(r: Result<(), ApiError>) {
    if let Err(e) = r {
        let _ = e.status();
        let _ = e.to_json();
    }
}

/// `chat::prepare` without the server state, in its order.
fn chat_request(m: &Model, req: ChatRequest) -> Result<(), ApiError> {
    params::check_common(&req.common)?;
    let own = structured::constraint(&req.common)?;
    let other = own.as_ref().map(|c| c.0);
    // A model with no known tool-call syntax, then one with Hermes' (the template we ship).
    let _ = tools::plan(&req, None, other);
    let plan = tools::plan(&req, Some(ToolCallFormat::Hermes), other)?;
    let logprobs = chat::requested_logprobs(&req)?;
    params::positive(req.common.n, "n")?;
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
    let ids = chat::render(
        &m.tok,
        &req.messages,
        plan.tools.as_deref(),
        add_generation_prompt,
    )?;
    let max_tokens = chat::requested_max_tokens(&req, ids.len(), m.limits.max_model_len)?;
    let sampling = params::sampling_params(&req.common, max_tokens, logprobs)?;
    m.limits.check(&Request::new("fuzz", ids, sampling))?;
    let constraint = match plan.constraint {
        Some(k) => Some(("tools", k)),
        None => own,
    };
    compile(m, constraint)
}

/// `completions::prepare` without the server state, in its order.
fn completion_request(m: &Model, req: CompletionRequest) -> Result<(), ApiError> {
    let (sampling, _echo) = completions::request_params(&req)?;
    let _ = params::prompt_count(&req.prompt);
    let max_len = m.limits.max_model_len;
    let max_bytes = admission::max_prompt_bytes(max_len, m.tok.max_token_bytes());
    let prompts = params::parse_prompts(&req.prompt, &m.tok, max_bytes, max_len)?;
    for p in prompts {
        m.limits
            .check(&Request::new("fuzz", p.ids, sampling.clone()))?;
    }
    compile(m, structured::constraint(&req.common)?)
}

/// `/tokenize`, and the token strings `return_token_strs` adds.
fn tokenize_request(m: &Model, req: TokenizeRequest) -> Result<(), ApiError> {
    for t in tokenize::tokenize_ids(&m.tok, &req)? {
        let _ = logprobs::token_text(&m.tok, t);
    }
    Ok(())
}

/// `/detokenize`.
fn detokenize_request(m: &Model, req: DetokenizeRequest) -> Result<(), ApiError> {
    tokenize::detokenize_text(&m.tok, m.limits.vocab_size, &req.tokens)?;
    Ok(())
}

/// The request's output constraint compiled to a grammar, as before queueing.
fn compile(m: &Model, constraint: Option<(&'static str, Constraint)>) -> Result<(), ApiError> {
    if let Some((param, k)) = constraint {
        m.grammar
            .compile(&k)
            .map_err(|e| ApiError::bad(param, e.to_string()))?;
    }
    Ok(())
}
