//! Compiles constraints into grammars once per content: a small LRU of compiled matchers
//! (found by comparing the constraint itself, so no hash collision can hand out the wrong
//! grammar), each request's choices starting from a clone.

use super::{Constraint, GuidedError, Matcher, token_env};
use crate::tokenizer::Tokenizer;
use llguidance::ParserFactory;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A compiled constraint: [`Self::matcher`] gives a fresh matcher at the grammar's start.
pub struct CompiledGrammar {
    start: Matcher,
}

impl CompiledGrammar {
    pub fn matcher(&self) -> Matcher {
        self.start.deep_clone()
    }
}

impl std::fmt::Debug for CompiledGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledGrammar")
    }
}

/// One per model: the parser factory holds the token trie, shared by every grammar.
pub struct GrammarCompiler {
    factory: ParserFactory,
    cache: Mutex<VecDeque<(Constraint, Arc<CompiledGrammar>)>>,
    capacity: usize,
}

impl GrammarCompiler {
    pub fn new(tokenizer: &Arc<Tokenizer>, capacity: usize) -> Result<Self, GuidedError> {
        let env = token_env::tok_env(tokenizer)?;
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GuidedError::Unavailable(e.to_string()))?;
        factory.quiet();
        Ok(Self {
            factory,
            cache: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        })
    }

    /// Compiles (or finds) the grammar of `c`. Errors name what is wrong with it; they are
    /// the client's (a 400), found before the request is queued.
    pub fn compile(&self, c: &Constraint) -> Result<Arc<CompiledGrammar>, GuidedError> {
        if let Constraint::Choice(options) = c
            && (options.is_empty() || options.iter().any(String::is_empty))
        {
            return Err(GuidedError::Invalid(
                "choice needs at least one option and no empty ones".into(),
            ));
        }
        if let Some(hit) = self.lookup(c) {
            return Ok(hit);
        }
        let parser = self.factory.create_parser(c.to_grammar());
        let start = Matcher::new(parser);
        if let Some(e) = start.get_error() {
            return Err(GuidedError::Invalid(e));
        }
        let compiled = Arc::new(CompiledGrammar { start });
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.push_front((c.clone(), compiled.clone()));
        cache.truncate(self.capacity);
        Ok(compiled)
    }

    fn lookup(&self, key: &Constraint) -> Option<Arc<CompiledGrammar>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let pos = cache.iter().position(|(k, _)| k == key)?;
        let entry = cache.remove(pos)?;
        let hit = entry.1.clone();
        cache.push_front(entry);
        Some(hit)
    }

    /// Grammars held in the cache (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiler() -> (Arc<Tokenizer>, GrammarCompiler) {
        let t = Arc::new(crate::tokenizer::tests::fixture());
        let c = GrammarCompiler::new(&t, 4).unwrap();
        (t, c)
    }

    /// Writes `text` through a fresh matcher as a model would: at each step the longest
    /// allowed token that continues the text. Ok(whether EOS is then allowed), or Err where
    /// no allowed token continues it.
    fn write(t: &Tokenizer, g: &CompiledGrammar, text: &str) -> Result<bool, usize> {
        let table = t.token_bytes();
        let mut m = g.matcher();
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            let mask = m.compute_mask().map_err(|_| rest.len())?;
            let best = (0..table.len() as u32)
                .filter(|&id| mask.is_allowed(id))
                .filter_map(|id| match &table[id as usize] {
                    crate::tokenizer::TokenBytes::Text(b)
                        if !b.is_empty() && rest.starts_with(b) =>
                    {
                        Some((b.len(), id))
                    }
                    _ => None,
                })
                .max()
                .ok_or(rest.len())?;
            m.consume_token(best.1).map_err(|_| rest.len())?;
            rest = &rest[best.0..];
        }
        let eos = t.eos_token_ids()[0];
        Ok(m.compute_mask_or_eos().map_err(|_| 0usize)?.is_allowed(eos))
    }

    #[test]
    fn a_schema_accepts_valid_json_and_rejects_invalid() {
        let (t, c) = compiler();
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "n": {"type": "integer"},
                           "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
            "required": ["name", "n"],
            "additionalProperties": false
        });
        let g = c.compile(&Constraint::JsonSchema(schema)).unwrap();
        assert_eq!(
            write(&t, &g, r#"{"name":"اردو","n":-3,"tags":["a","b"]}"#),
            Ok(true)
        );
        // Incomplete: allowed so far, EOS not yet.
        assert_eq!(write(&t, &g, r#"{"name":"x","n":3"#), Ok(false));
        assert!(write(&t, &g, r#"{"name":"x","n":3.5}"#).is_err());
        assert!(write(&t, &g, r#"{"name":"x","n":3,"extra":1}"#).is_err());
        assert!(write(&t, &g, r#"{"name":"x","n":3,"tags":["c"]}"#).is_err());
        assert!(
            write(&t, &g, r#"{ "name":"x","n":3}"#).is_err(),
            "no free whitespace"
        );
    }

    #[test]
    fn invalid_constraints_are_errors_and_equal_ones_are_compiled_once() {
        let (_t, c) = compiler();
        assert!(c.compile(&Constraint::Regex("(unclosed".into())).is_err());
        assert!(
            c.compile(&Constraint::Lark("start: nothing_defined".into()))
                .is_err()
        );
        assert!(c.compile(&Constraint::Choice(vec![])).is_err());
        let a = c
            .compile(&Constraint::Choice(vec!["yes".into(), "no \"q\"".into()]))
            .unwrap();
        let b = c
            .compile(&Constraint::Choice(vec!["yes".into(), "no \"q\"".into()]))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(c.cached(), 1);
        for i in 0..6 {
            c.compile(&Constraint::Regex(format!("a{{{i}}}"))).unwrap();
        }
        assert_eq!(c.cached(), 4);
    }

    #[test]
    fn choice_and_regex_allow_exactly_their_text() {
        let (t, c) = compiler();
        let g = c
            .compile(&Constraint::Choice(vec!["yes".into(), "no \"q\"".into()]))
            .unwrap();
        assert_eq!(write(&t, &g, "yes"), Ok(true));
        assert_eq!(write(&t, &g, "no \"q\""), Ok(true));
        assert_eq!(write(&t, &g, "no"), Ok(false));
        assert!(write(&t, &g, "maybe").is_err());
        let g = c
            .compile(&Constraint::Regex(r"\d{3}-[A-Z]{2}".into()))
            .unwrap();
        assert_eq!(write(&t, &g, "042-PK"), Ok(true));
        assert!(write(&t, &g, "04-PK").is_err());
        let g = c.compile(&Constraint::JsonObject).unwrap();
        assert_eq!(write(&t, &g, r#"{"any":[1,{"x":null}]}"#), Ok(true));
        assert!(write(&t, &g, "[1]").is_err());
    }
}
