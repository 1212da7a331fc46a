//! Tool calling, apart from HTTP: which text format a model writes its calls in, how the
//! calls are cut out of generated text (incrementally, for streaming), and the grammar that
//! forces a call when the client requires one. The OpenAI handler maps these onto the wire.

mod format;
mod parse;
mod schema;
mod stream;

pub use format::ToolCallFormat;
pub use schema::required_calls_schema;
pub use stream::{ToolDelta, ToolMode, ToolStreamer, ToolsOutput};

/// One function the client offers: its name and its parameters' JSON schema.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    pub parameters: Option<serde_json::Value>,
}

/// A parsed call: the function's name and its arguments as a JSON text (OpenAI sends
/// arguments as a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}
