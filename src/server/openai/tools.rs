//! OpenAI tool calling on the wire: `tools`, `tool_choice` and `parallel_tool_calls` decide
//! what the template is shown, whether a grammar forces a call and how the output is read;
//! the calls read back become `tool_calls` with ids. The reading itself is [`crate::tools`].

use super::types::{
    ChatDelta, ChatMessageOut, ChatRequest, FunctionCallOut, FunctionDelta, ToolCallDelta,
    ToolCallOut,
};
use crate::engine::FinishReason;
use crate::guided::Constraint;
use crate::server::error::ApiError;
use crate::tools::{
    FunctionSpec, ToolCallFormat, ToolDelta, ToolMode, ToolStreamer, required_calls_schema,
};
use serde_json::{Value, json};

/// What a chat request's tool fields amount to.
#[derive(Debug, Default)]
pub struct ToolPlan {
    /// The tools as the chat template receives them.
    pub tools: Option<Vec<Value>>,
    /// How the output is read; `None` for plain text (no tools, or `tool_choice: none`).
    pub mode: Option<ToolMode>,
    /// The grammar of `required` and named choices.
    pub constraint: Option<Constraint>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One `tools` entry checked: `{"type": "function", "function": {"name", "description"?,
/// "parameters"?, "strict"?}}`.
fn function_of(i: usize, tool: &Value) -> Result<FunctionSpec, ApiError> {
    let bad = |m: String| ApiError::bad("tools", format!("tools[{i}]: {m}"));
    let kind = tool.get("type").and_then(Value::as_str);
    if kind != Some("function") {
        return Err(bad(format!(
            "type must be \"function\", got {}",
            tool.get("type").unwrap_or(&Value::Null)
        )));
    }
    let f = tool
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("needs a `function` object".into()))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("function.name must be a string".into()))?;
    if !valid_name(name) {
        return Err(bad(format!(
            "function.name `{name}` must be 1 to 64 letters, digits, `_` or `-`"
        )));
    }
    if f.get("description")
        .is_some_and(|d| !d.is_string() && !d.is_null())
    {
        return Err(bad("function.description must be a string".into()));
    }
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => Some(p.clone()),
        Some(_) => {
            return Err(bad(
                "function.parameters must be a JSON schema object".into()
            ));
        }
    };
    Ok(FunctionSpec {
        name: name.to_string(),
        parameters,
    })
}

enum Choice {
    None,
    Auto,
    Required,
    Named(String),
}

fn choice_of(v: Option<&Value>) -> Result<Choice, ApiError> {
    let bad = |m: &str| ApiError::bad("tool_choice", m);
    match v {
        None | Some(Value::Null) => Ok(Choice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok(Choice::None),
            "auto" => Ok(Choice::Auto),
            "required" => Ok(Choice::Required),
            _ => Err(bad(
                "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ..}}",
            )),
        },
        Some(o) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(bad("a tool_choice object needs \"type\": \"function\""));
            }
            o.get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(|n| Choice::Named(n.to_string()))
                .ok_or_else(|| bad("tool_choice.function.name must be a string"))
        }
    }
}

/// Checks the request's tool fields and decides how it is served. `format` is the model's
/// tool-call syntax; `other_constraint` names the request's own output constraint, which a
/// forced call's grammar cannot be combined with.
pub fn plan(
    req: &ChatRequest,
    format: Option<ToolCallFormat>,
    other_constraint: Option<&'static str>,
) -> Result<ToolPlan, ApiError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    let choice = choice_of(req.tool_choice.as_ref())?;
    if tools.is_empty() {
        return match (req.tool_choice.as_ref(), choice) {
            (None, _) | (_, Choice::None) => Ok(ToolPlan::default()),
            _ => Err(ApiError::bad(
                "tool_choice",
                "tool_choice other than \"none\" needs `tools`",
            )),
        };
    }
    let functions = tools
        .iter()
        .enumerate()
        .map(|(i, t)| function_of(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, f) in functions.iter().enumerate() {
        if functions[..i].iter().any(|g| g.name == f.name) {
            return Err(ApiError::bad(
                "tools",
                format!("tools[{i}]: the function name `{}` is given twice", f.name),
            ));
        }
    }
    let parallel = req.parallel_tool_calls.unwrap_or(true);
    let forced = matches!(choice, Choice::Required | Choice::Named(_));
    if forced && let Some(param) = other_constraint {
        return Err(ApiError::bad(
            param,
            format!("{param} cannot be combined with tool_choice \"required\" or a named function"),
        ));
    }
    let (mode, constraint) = match choice {
        Choice::None => (None, None),
        Choice::Auto => {
            let format = format.ok_or_else(|| {
                ApiError::bad(
                    "tool_choice",
                    "tool_choice \"auto\" needs to know how this model writes tool calls, and its chat template does not say: start the server with --tool-call-parser (hermes, llama3_json or mistral), or use tool_choice \"required\" or a named function",
                )
            })?;
            (Some(ToolMode::Auto { format, parallel }), None)
        }
        Choice::Required => (
            Some(ToolMode::Required),
            Some(Constraint::JsonSchema(required_calls_schema(
                &functions, parallel,
            ))),
        ),
        Choice::Named(name) => {
            let f = functions.iter().find(|f| f.name == name).ok_or_else(|| {
                ApiError::bad(
                    "tool_choice",
                    format!("tool_choice names the function `{name}`, which is not in `tools`"),
                )
            })?;
            let constraint = match &f.parameters {
                Some(p) => Constraint::JsonSchema(p.clone()),
                None => Constraint::JsonObject,
            };
            (Some(ToolMode::Named(name)), Some(constraint))
        }
    };
    Ok(ToolPlan {
        tools: Some(tools.to_vec()),
        mode,
        constraint,
    })
}

/// An assistant message's `tool_calls` as templates want them: each call's `arguments`
/// parsed from its JSON text into an object.
pub fn template_tool_calls(calls: &[Value]) -> Result<Vec<Value>, ApiError> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let bad = |m: &str| ApiError::bad("messages", format!("tool_calls[{i}]: {m}"));
            let f = c
                .get("function")
                .ok_or_else(|| bad("needs a `function` object"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("function.name must be a string"))?;
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                    .map_err(|_| bad("function.arguments must be a JSON text"))?,
                Some(v @ Value::Object(_)) => v.clone(),
                None | Some(Value::Null) => json!({}),
                Some(_) => return Err(bad("function.arguments must be a JSON text")),
            };
            Ok(json!({
                "id": c.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }))
        })
        .collect()
}

/// A fresh call id in OpenAI's shape.
pub fn call_id() -> String {
    format!(
        "call_{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// The assistant message of a whole answer, and whether it holds calls.
pub fn message(text: &str, mode: Option<&ToolMode>) -> (ChatMessageOut, bool) {
    let Some(mode) = mode else {
        return (
            ChatMessageOut {
                role: "assistant",
                content: Some(text.to_string()),
                tool_calls: None,
            },
            false,
        );
    };
    let out = ToolStreamer::parse_all(mode.clone(), text);
    let has_calls = !out.calls.is_empty();
    let calls = out
        .calls
        .into_iter()
        .map(|c| ToolCallOut {
            id: call_id(),
            kind: "function",
            function: FunctionCallOut {
                name: c.name,
                arguments: c.arguments,
            },
        })
        .collect();
    let content = (!has_calls || !out.content.is_empty()).then_some(out.content);
    (
        ChatMessageOut {
            role: "assistant",
            content,
            tool_calls: has_calls.then_some(calls),
        },
        has_calls,
    )
}

/// `tool_calls` when the model stopped after calling.
pub fn finish_reason(reason: FinishReason, has_calls: bool) -> &'static str {
    match reason {
        FinishReason::Stop if has_calls => "tool_calls",
        other => other.as_str(),
    }
}

/// Streamed pieces → chat deltas: consecutive content joined; a call's first delta carries
/// its new id.
pub fn deltas(pieces: Vec<ToolDelta>) -> Vec<ChatDelta> {
    let mut out: Vec<ChatDelta> = Vec::new();
    for p in pieces {
        match p {
            ToolDelta::Content(text) => {
                if let Some(ChatDelta {
                    content: Some(c),
                    tool_calls: None,
                    ..
                }) = out.last_mut()
                {
                    c.push_str(&text);
                } else {
                    out.push(ChatDelta {
                        content: Some(text),
                        ..ChatDelta::default()
                    });
                }
            }
            ToolDelta::Call { index, name } => {
                out.push(ChatDelta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index,
                        id: Some(call_id()),
                        kind: Some("function"),
                        function: FunctionDelta {
                            name: Some(name),
                            arguments: Some(String::new()),
                        },
                    }]),
                    ..ChatDelta::default()
                });
            }
            ToolDelta::Arguments { index, fragment } => out.push(ChatDelta {
                tool_calls: Some(vec![ToolCallDelta {
                    index,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments: Some(fragment),
                    },
                }]),
                ..ChatDelta::default()
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ChatRequest {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (k, x) in v.as_object().unwrap() {
            body[k] = x.clone();
        }
        serde_json::from_value(body).unwrap()
    }

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
    }

    fn param_of(e: ApiError) -> Option<String> {
        match e {
            ApiError::BadRequest { param, .. } => param,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn choices_map_to_modes_and_grammars() {
        let hermes = Some(ToolCallFormat::Hermes);
        let p = plan(&req(json!({"tools": [weather()]})), hermes, None).unwrap();
        assert_eq!(
            p.mode,
            Some(ToolMode::Auto {
                format: ToolCallFormat::Hermes,
                parallel: true
            })
        );
        assert!(p.constraint.is_none() && p.tools.is_some());

        let p = plan(
            &req(json!({"tools": [weather()], "tool_choice": "required", "parallel_tool_calls": false})),
            None,
            None,
        )
        .unwrap();
        assert_eq!(p.mode, Some(ToolMode::Required));
        match p.constraint {
            Some(Constraint::JsonSchema(s)) => assert_eq!(s["maxItems"], 1),
            other => panic!("{other:?}"),
        }

        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let p = plan(
            &req(json!({"tools": [weather()], "tool_choice": named})),
            None,
            None,
        )
        .unwrap();
        assert_eq!(p.mode, Some(ToolMode::Named("get_weather".into())));
        assert!(matches!(p.constraint, Some(Constraint::JsonSchema(_))));

        let p = plan(
            &req(json!({"tools": [weather()], "tool_choice": "none"})),
            None,
            None,
        )
        .unwrap();
        assert!(p.mode.is_none() && p.constraint.is_none() && p.tools.is_some());
        let p = plan(&req(json!({"tool_choice": "none"})), None, None).unwrap();
        assert!(p.tools.is_none());
    }

    #[test]
    fn bad_tool_fields_are_400s_naming_the_field() {
        let cases = [
            (json!({"tools": [weather()]}), None, "tool_choice"),
            (json!({"tool_choice": "required"}), None, "tool_choice"),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
                None,
                "tool_choice",
            ),
            (
                json!({"tools": [weather()], "tool_choice": "always"}),
                None,
                "tool_choice",
            ),
            (
                json!({"tools": [{"type": "retrieval"}], "tool_choice": "required"}),
                None,
                "tools",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "has space"}}], "tool_choice": "required"}),
                None,
                "tools",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}], "tool_choice": "required"}),
                None,
                "tools",
            ),
            (
                json!({"tools": [weather(), weather()], "tool_choice": "required"}),
                None,
                "tools",
            ),
            (
                json!({"tools": [weather()], "tool_choice": "required"}),
                Some("response_format"),
                "response_format",
            ),
        ];
        for (body, other, field) in cases {
            let e = plan(&req(body.clone()), None, other).unwrap_err();
            assert_eq!(param_of(e).as_deref(), Some(field), "{body}");
        }
    }

    #[test]
    fn answers_become_messages_with_ids_and_finish_reasons() {
        let mode = ToolMode::Auto {
            format: ToolCallFormat::Hermes,
            parallel: true,
        };
        let (m, calls) = message(
            "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Quetta\"}}</tool_call>",
            Some(&mode),
        );
        assert!(calls && m.content.is_none());
        let c = &m.tool_calls.unwrap()[0];
        assert!(c.id.starts_with("call_") && c.id.len() == 29, "{}", c.id);
        assert_eq!(c.function.arguments, r#"{"city":"Quetta"}"#);
        assert_eq!(finish_reason(FinishReason::Stop, calls), "tool_calls");
        assert_eq!(finish_reason(FinishReason::Length, calls), "length");
        let (m, calls) = message("plain", Some(&mode));
        assert!(!calls && m.content.as_deref() == Some("plain") && m.tool_calls.is_none());
        assert_eq!(finish_reason(FinishReason::Stop, calls), "stop");

        let args = template_tool_calls(&[json!({"id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": "{\"a\": [1]}"}})])
        .unwrap();
        assert_eq!(args[0]["function"]["arguments"], json!({"a": [1]}));
        assert!(
            template_tool_calls(&[json!({"function": {"name": "f", "arguments": "{"}})]).is_err()
        );
    }
}
