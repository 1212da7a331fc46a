//! Chat templates are Jinja programs shipped in tokenizer_config.json; minijinja with
//! Python-compatible methods (`.strip()`, `.title()`, …) runs the ones real checkpoints ship.

use super::{Result, TokenizerError};
use serde::Serialize;

/// A message as templates read it. The tool fields are left out when absent, so a
/// template's `message.tool_calls is defined` tests see what transformers would give them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant's calls: `{id, type, function: {name, arguments}}` with `arguments` as a
    /// JSON object (templates `tojson` it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A `tool` message: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }
}

pub struct ChatTemplate {
    source: String,
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// The template of a tokenizer_config.json: a string, or a list of named templates of which
/// "default" is the chat one.
pub(super) fn from_config(cfg: &serde_json::Value) -> Option<String> {
    match cfg.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| items.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        msg,
    ))
}

impl ChatTemplate {
    pub fn new(source: String, bos_token: String, eos_token: String) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source.clone())
            .map_err(|e| TokenizerError::Template(e.to_string()))?;
        Ok(Self {
            source,
            env,
            bos_token,
            eos_token,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// `tools` are the OpenAI tool objects (`{type: function, function: {..}}`), which is
    /// the shape transformers passes templates; `None` renders as `none`, as there.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TokenizerError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| TokenizerError::Template(e.to_string()))
    }
}
