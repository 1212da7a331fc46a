//! The grammar compiler of a served model, built on first use: building it walks the whole
//! vocabulary (a token trie), which start-up and servers that never see a constraint should
//! not pay for.

use super::{CompiledGrammar, Constraint, GrammarCompiler, GuidedError};
use crate::tokenizer::Tokenizer;
use std::sync::{Arc, OnceLock};

/// Grammars kept compiled: clients tend to send the same few schemas again and again.
const CACHED_GRAMMARS: usize = 64;

pub struct LazyGrammarCompiler {
    tokenizer: Arc<Tokenizer>,
    compiler: OnceLock<Result<GrammarCompiler, String>>,
}

impl LazyGrammarCompiler {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        Self {
            tokenizer,
            compiler: OnceLock::new(),
        }
    }

    /// Compiles `c`; blocks (the caller runs it on a blocking thread). The first call
    /// builds the compiler; concurrent first calls wait for that one build.
    pub fn compile(&self, c: &Constraint) -> Result<Arc<CompiledGrammar>, GuidedError> {
        let compiler = self
            .compiler
            .get_or_init(|| {
                GrammarCompiler::new(&self.tokenizer, CACHED_GRAMMARS).map_err(|e| match e {
                    GuidedError::Invalid(m) | GuidedError::Unavailable(m) => m,
                })
            })
            .as_ref()
            .map_err(|e| GuidedError::Unavailable(e.clone()))?;
        compiler.compile(c)
    }
}

impl std::fmt::Debug for LazyGrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyGrammarCompiler")
            .field("built", &self.compiler.get().is_some())
            .finish()
    }
}
