//! Grammar-constrained decoding: a request may ask for output that matches a JSON schema, a
//! regular expression, one of a list of strings or a Lark grammar. llguidance compiles the
//! constraint against our vocabulary; each choice then carries a [`llguidance::Matcher`] that
//! yields the set of tokens allowed next, and the sampler draws only from that set.

mod compiler;
mod constraint;
mod lazy;
mod mask;
mod token_env;

pub use compiler::{CompiledGrammar, GrammarCompiler};
pub use constraint::Constraint;
pub use lazy::LazyGrammarCompiler;
pub use llguidance::Matcher;
pub use llguidance::toktrie::SimpleVob as TokenMask;
pub use mask::apply_mask;

#[derive(Debug, thiserror::Error)]
pub enum GuidedError {
    /// The schema, regex or grammar cannot be compiled; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error("structured output is not available for this tokenizer: {0}")]
    Unavailable(String),
}
