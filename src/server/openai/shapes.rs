//! What the spec shows for request fields the handlers read as raw JSON: they check those
//! values themselves so that a bad one gets a 400 naming the exact field (`tools[2].function.
//! name`), which a typed field's serde error cannot say. These types are never built; each
//! stands in (`value_type`) for one such field in the OpenAPI document.

#![allow(dead_code)]

use serde::Deserialize;
use utoipa::ToSchema;

/// One entry of `tools`.
#[derive(Deserialize, ToSchema)]
pub struct ToolSpec {
    /// Only `function`.
    #[serde(rename = "type")]
    #[schema(example = "function")]
    pub kind: String,
    pub function: FunctionSpec,
}

#[derive(Deserialize, ToSchema)]
pub struct FunctionSpec {
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON Schema for the arguments; calls are constrained to it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// `tool_choice`: `none`, `auto`, `required`, or one named function.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Deserialize, ToSchema)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    #[schema(example = "function")]
    pub kind: String,
    pub function: FunctionName,
}

#[derive(Deserialize, ToSchema)]
pub struct FunctionName {
    pub name: String,
}

/// An assistant turn's call, as this API returned it.
#[derive(Deserialize, ToSchema)]
pub struct ToolCallIn {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: FunctionCallIn,
}

#[derive(Deserialize, ToSchema)]
pub struct FunctionCallIn {
    pub name: String,
    /// JSON text (or an object).
    #[schema(value_type = String)]
    pub arguments: serde_json::Value,
}

/// OpenAI's `response_format`.
#[derive(Deserialize, ToSchema)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    #[schema(example = "json_schema")]
    pub kind: String,
    /// With `json_schema`: `{"name", "schema", "strict"}`.
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize, ToSchema)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// vLLM's `structured_outputs`: exactly one constraint.
#[derive(Deserialize, ToSchema)]
pub struct StructuredOutputs {
    /// A JSON Schema (object or its JSON text).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub json: Option<serde_json::Value>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub choice: Option<Vec<String>>,
    /// A Lark or GBNF grammar.
    #[serde(default)]
    pub grammar: Option<String>,
    #[serde(default)]
    pub json_object: Option<bool>,
}

/// `/v1/embeddings` `input`: text, texts, token ids or token-id arrays.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

/// The completions `prompt` (read as JSON so that prompts are counted before they are parsed).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CompletionPrompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}
