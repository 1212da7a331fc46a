//! What a request constrains its output to, in the engine's terms (the HTTP layer maps
//! OpenAI's `response_format` and vLLM's `structured_outputs` onto it).

use llguidance::api::TopLevelGrammar;

#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// A JSON value matching this JSON schema.
    JsonSchema(serde_json::Value),
    /// Any JSON object (OpenAI's `json_object` mode).
    JsonObject,
    /// Text matching this regular expression, whole.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark grammar (llguidance's dialect, as vLLM's `grammar`).
    Lark(String),
}

/// JSON as a model writes it compactly: no free whitespace between tokens, so a small model
/// cannot wander into endless spaces and the output is the same whatever the sampler does.
fn compact(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = schema.as_object_mut() {
        let opts = obj
            .entry("x-guidance")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(o) = opts.as_object_mut() {
            o.entry("whitespace_flexible")
                .or_insert(serde_json::Value::Bool(false));
        }
    }
    schema
}

impl Constraint {
    pub(crate) fn to_grammar(&self) -> TopLevelGrammar {
        match self {
            Constraint::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(compact(schema.clone()))
            }
            Constraint::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"})))
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Choice(options) => {
                // JSON string syntax is valid Lark string syntax, escapes included.
                let alternatives: Vec<String> = options
                    .iter()
                    .map(|o| serde_json::Value::String(o.clone()).to_string())
                    .collect();
                TopLevelGrammar::from_lark(format!("start: {}", alternatives.join(" | ")))
            }
            Constraint::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
        }
    }
}
