//! Tokenization for the engine and the API: the Hugging Face `tokenizers` model, the special
//! tokens `tokenizer_config.json` declares (BOS added the way transformers adds it), the EOS
//! ids from `generation_config.json`, and the chat template.

mod chat_template;
pub mod gguf;
mod token_bytes;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use token_bytes::TokenBytes;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("tokenization failed: {0}")]
    Encode(String),
    #[error("detokenization failed: {0}")]
    Decode(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("this model has no chat template; pass --chat-template")]
    NoChatTemplate,
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Prepend BOS ourselves: checkpoints converted from SentencePiece often say
    /// `add_bos_token` in tokenizer_config.json but have no post-processor doing it.
    add_bos: bool,
    bos: Option<(String, u32)>,
    eos: Option<(String, u32)>,
    eos_token_ids: Vec<u32>,
    chat_template: Option<ChatTemplate>,
    /// Bytes of the longest vocabulary entry: no token covers more text, which bounds the
    /// tokens of a text from below by its length (checked before tokenizing huge prompts).
    max_token_bytes: usize,
}

/// A special token in tokenizer_config.json: a string or an AddedToken object.
fn token_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let load = |reason: String| TokenizerError::Load {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| load(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| load(e.to_string()))
}

impl Tokenizer {
    /// Loads a Hugging Face tokenizer directory: its `tokenizer.json`, with the
    /// `tokenizer_config.json` and `generation_config.json` beside it when present.
    pub fn from_dir(
        dir: &Path,
        model_eos: &[u32],
        template_override: Option<String>,
    ) -> Result<Self> {
        let beside = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        Self::from_files(
            &dir.join("tokenizer.json"),
            beside("tokenizer_config.json").as_deref(),
            beside("generation_config.json").as_deref(),
            model_eos,
            template_override,
        )
    }

    /// Loads `tokenizer.json` plus the optional configs. `model_eos` are the config.json EOS
    /// ids, used when generation_config.json is absent. `template_override` replaces the
    /// checkpoint's chat template (the `--chat-template` file's contents).
    pub fn from_files(
        tokenizer_json: &Path,
        tokenizer_config: Option<&Path>,
        generation_config: Option<&Path>,
        model_eos: &[u32],
        template_override: Option<String>,
    ) -> Result<Self> {
        let inner =
            tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| TokenizerError::Load {
                path: tokenizer_json.display().to_string(),
                reason: e.to_string(),
            })?;
        let cfg = match tokenizer_config {
            Some(p) => read_json(p)?,
            None => serde_json::Value::Null,
        };
        let with_id =
            |text: Option<String>| text.and_then(|t| inner.token_to_id(&t).map(|id| (t, id)));
        let bos = with_id(token_text(cfg.get("bos_token")));
        let eos = with_id(token_text(cfg.get("eos_token")));
        let post_processor_adds_bos = inner
            .encode("a", true)
            .map(|e| {
                bos.as_ref()
                    .is_some_and(|(_, id)| e.get_ids().first() == Some(id))
            })
            .unwrap_or(false);
        let add_bos = cfg
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
            && !post_processor_adds_bos
            && bos.is_some();
        let mut eos_token_ids = match generation_config {
            Some(p) => indus_models::config::token_ids_from_json(read_json(p)?.get("eos_token_id")),
            None => Vec::new(),
        };
        if eos_token_ids.is_empty() {
            eos_token_ids = model_eos.to_vec();
        }
        if eos_token_ids.is_empty()
            && let Some((_, id)) = &eos
        {
            eos_token_ids.push(*id);
        }
        let template_source = template_override.or_else(|| chat_template::from_config(&cfg));
        Self::from_parts(inner, add_bos, bos, eos, eos_token_ids, template_source)
    }

    /// A tokenizer from its pieces (tokenizer.json and its configs, or a GGUF file's
    /// metadata); the chat template is compiled with the BOS/EOS texts it may refer to.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        add_bos: bool,
        bos: Option<(String, u32)>,
        eos: Option<(String, u32)>,
        eos_token_ids: Vec<u32>,
        template_source: Option<String>,
    ) -> Result<Self> {
        let chat_template = template_source
            .map(|src| {
                ChatTemplate::new(
                    src,
                    bos.as_ref().map(|b| b.0.clone()).unwrap_or_default(),
                    eos.as_ref().map(|e| e.0.clone()).unwrap_or_default(),
                )
            })
            .transpose()?;
        let max_token_bytes = inner
            .get_vocab(true)
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(1);
        Ok(Self {
            max_token_bytes,
            inner,
            add_bos,
            bos,
            eos,
            eos_token_ids,
            chat_template,
        })
    }

    /// Bytes of the longest vocabulary entry (a bound on the text one token covers).
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// Whether [`Self::encode`] with special tokens prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Token ids of `text`. `add_special_tokens` adds BOS as transformers would; chat prompts
    /// are rendered with their special tokens as text and pass `false`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special_tokens
            && self.add_bos
            && let Some((_, bos)) = &self.bos
        {
            ids.push(*bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The text of one token id as the vocabulary has it (for logprob entries).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|b| b.1)
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_ref().map(|e| e.0.as_str())
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The chat template's Jinja source (to tell which tool-call format it writes).
    pub fn chat_template_source(&self) -> Option<&str> {
        self.chat_template.as_ref().map(ChatTemplate::source)
    }

    /// Renders a conversation with the model's chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.apply_chat_template_with_tools(messages, None, add_generation_prompt)
    }

    /// Renders a conversation and the tools offered in it.
    pub fn apply_chat_template_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.chat_template
            .as_ref()
            .ok_or(TokenizerError::NoChatTemplate)?
            .render(messages, tools, add_generation_prompt)
    }
}

#[cfg(test)]
pub(crate) mod tests;
