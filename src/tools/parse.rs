//! The text of one call region → the calls in it, per format; `None` when it is not a
//! well-formed call, so the caller can hand the text back as content.

use super::{ToolCall, ToolCallFormat};
use serde_json::Value;

/// `{"name": .., "arguments" | "parameters": ..}` → a call. Arguments given as a JSON text
/// are taken as they are; absent ones are the empty object.
pub(super) fn call_of(v: &Value) -> Option<ToolCall> {
    let obj = v.as_object()?;
    let name = obj.get("name")?.as_str()?.to_string();
    if name.is_empty() {
        return None;
    }
    let arguments = match obj.get("arguments").or_else(|| obj.get("parameters")) {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s).ok()?;
            s.clone()
        }
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => return None,
    };
    Some(ToolCall { name, arguments })
}

/// JSON values one after another, separated by whitespace and, for Llama 3, `;`.
fn json_sequence(text: &str) -> Option<Vec<Value>> {
    let mut rest = text.trim_start();
    let mut values = Vec::new();
    while !rest.is_empty() {
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let v = it.next()?.ok()?;
        let used = it.byte_offset();
        values.push(v);
        rest = rest[used..].trim_start();
        if let Some(r) = rest.strip_prefix(';') {
            rest = r.trim_start();
        }
    }
    Some(values)
}

/// The calls in `body`, the text after a format's start marker (and before its end marker,
/// where the format has one).
pub(super) fn calls_in(format: ToolCallFormat, body: &str) -> Option<Vec<ToolCall>> {
    let body = body.trim();
    let calls: Option<Vec<ToolCall>> = match format {
        ToolCallFormat::Hermes => {
            let v: Value = serde_json::from_str(body).ok()?;
            call_of(&v).map(|c| vec![c])
        }
        ToolCallFormat::Llama3Json => {
            let body = body.strip_prefix("<|python_tag|>").unwrap_or(body);
            json_sequence(body)?.iter().map(call_of).collect()
        }
        ToolCallFormat::Mistral => {
            if body.starts_with('[') || body.starts_with('{') {
                let v: Value = serde_json::from_str(body).ok()?;
                match v {
                    Value::Array(items) => items.iter().map(call_of).collect(),
                    one => call_of(&one).map(|c| vec![c]),
                }
            } else {
                // v11+: `name[ARGS]{..}`.
                let (name, args) = body.split_once("[ARGS]")?;
                let name = name.trim();
                let args: Value = serde_json::from_str(args.trim()).ok()?;
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
                (valid && args.is_object()).then(|| {
                    vec![ToolCall {
                        name: name.to_string(),
                        arguments: args.to_string(),
                    }]
                })
            }
        }
    };
    calls.filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn each_format_yields_its_calls() {
        use ToolCallFormat::*;
        let cases: &[(ToolCallFormat, &str, Option<Vec<ToolCall>>)] = &[
            (
                Hermes,
                r#" {"name": "get_weather", "arguments": {"city": "Lahore"}} "#,
                Some(vec![call("get_weather", r#"{"city":"Lahore"}"#)]),
            ),
            (Hermes, r#"{"name": "now"}"#, Some(vec![call("now", "{}")])),
            (
                Hermes,
                r#"{"name": "f", "arguments": "{\"a\": 1}"}"#,
                Some(vec![call("f", r#"{"a": 1}"#)]),
            ),
            (Hermes, r#"{"name": "f", "arguments": {"a": 1}"#, None),
            (Hermes, r#"{"arguments": {}}"#, None),
            (Hermes, r#"{"name": "f", "arguments": [1]}"#, None),
            (
                Llama3Json,
                r#"<|python_tag|>{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}}"#,
                Some(vec![call("a", r#"{"x":1}"#), call("b", "{}")]),
            ),
            (Llama3Json, r#"{"answer": 42}"#, None),
            (Llama3Json, "{not json", None),
            (
                Mistral,
                r#"[{"name": "a", "arguments": {"x": "y"}}, {"name": "b", "arguments": {}}]"#,
                Some(vec![call("a", r#"{"x":"y"}"#), call("b", "{}")]),
            ),
            (
                Mistral,
                r#"lookup[ARGS]{"id": 7}"#,
                Some(vec![call("lookup", r#"{"id":7}"#)]),
            ),
            (Mistral, "[]", None),
            (Mistral, "hello [ARGS] there", None),
        ];
        for (format, body, want) in cases {
            assert_eq!(&calls_in(*format, body), want, "{format} {body}");
        }
    }
}
