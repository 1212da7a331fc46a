//! The families of tool-call syntax, named as vLLM's `--tool-call-parser` names them.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallFormat {
    /// `<tool_call>{"name": .., "arguments": {..}}</tool_call>`: Hermes, Qwen2.5/Qwen3,
    /// and the ChatML template Indus ships (`templates/tool_chat_hermes.jinja`).
    Hermes,
    /// Llama 3.1+: the reply is `{"name": .., "parameters": {..}}` (several joined by `;`),
    /// optionally after `<|python_tag|>`.
    Llama3Json,
    /// Mistral: `[TOOL_CALLS]` then a JSON array of calls, or `name[ARGS]{..}` (v11+).
    Mistral,
}

impl ToolCallFormat {
    pub const ALL: [ToolCallFormat; 3] = [Self::Hermes, Self::Llama3Json, Self::Mistral];

    pub fn name(self) -> &'static str {
        match self {
            Self::Hermes => "hermes",
            Self::Llama3Json => "llama3_json",
            Self::Mistral => "mistral",
        }
    }

    /// The format a chat template writes tool calls in, judged by the markers it renders;
    /// `None` when the template shows no sign of tools.
    pub fn detect(template: &str) -> Option<Self> {
        if template.contains("<tool_call>") {
            Some(Self::Hermes)
        } else if template.contains("[TOOL_CALLS]") {
            Some(Self::Mistral)
        } else if template.contains("<|python_tag|>") || template.contains("ipython") {
            Some(Self::Llama3Json)
        } else {
            None
        }
    }

    /// Whether the marker is a special token that decoding drops unless told to keep it.
    pub fn marker_is_special(self) -> bool {
        matches!(self, Self::Llama3Json | Self::Mistral)
    }
}

impl fmt::Display for ToolCallFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ToolCallFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hermes" | "qwen" => Ok(Self::Hermes),
            "llama3_json" | "llama4_json" => Ok(Self::Llama3Json),
            "mistral" => Ok(Self::Mistral),
            other => Err(format!(
                "unknown tool-call parser `{other}` (hermes, llama3_json or mistral)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_templates_are_recognised() {
        for f in ToolCallFormat::ALL {
            assert_eq!(f.name().parse::<ToolCallFormat>(), Ok(f));
        }
        assert!("xml".parse::<ToolCallFormat>().is_err());
        let qwen = "{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools> \
                    wrap in <tool_call></tool_call>{% endif %}";
        assert_eq!(ToolCallFormat::detect(qwen), Some(ToolCallFormat::Hermes));
        assert_eq!(
            ToolCallFormat::detect("{{ '[AVAILABLE_TOOLS]' }}{{ '[TOOL_CALLS]' }}"),
            Some(ToolCallFormat::Mistral)
        );
        assert_eq!(
            ToolCallFormat::detect("<|start_header_id|>ipython<|end_header_id|>"),
            Some(ToolCallFormat::Llama3Json)
        );
        assert_eq!(ToolCallFormat::detect("{{ messages }}"), None);
    }
}
