//! Which output constraint a request asks for — OpenAI's `response_format`, vLLM's
//! `structured_outputs` or its older `guided_*` fields — and its compiled grammar.

use super::types::CommonParams;
use crate::guided::{CompiledGrammar, Constraint, GuidedError};
use crate::server::error::ApiError;
use crate::server::state::{AppState, Loaded};
use serde_json::Value;
use std::sync::Arc;

/// The request's constraint and the field it came from (named in errors).
pub fn constraint(c: &CommonParams) -> Result<Option<(&'static str, Constraint)>, ApiError> {
    let mut found: Vec<(&'static str, Constraint)> = Vec::new();
    if let Some(f) = &c.response_format
        && let Some(k) = response_format(f)?
    {
        found.push(("response_format", k));
    }
    if let Some(s) = &c.structured_outputs {
        found.extend(structured_outputs(s)?.map(|k| ("structured_outputs", k)));
    }
    if let Some(j) = &c.guided_json {
        found.push((
            "guided_json",
            Constraint::JsonSchema(schema_of(j, "guided_json")?),
        ));
    }
    if let Some(r) = &c.guided_regex {
        found.push(("guided_regex", Constraint::Regex(r.clone())));
    }
    if let Some(o) = &c.guided_choice {
        found.push(("guided_choice", Constraint::Choice(o.clone())));
    }
    if let Some(g) = &c.guided_grammar {
        found.push(("guided_grammar", Constraint::Lark(g.clone())));
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|f| f.0).collect();
        return Err(ApiError::bad(
            found[1].0,
            format!(
                "only one output constraint may be given, got {}",
                names.join(" and ")
            ),
        ));
    }
    Ok(found.pop())
}

fn response_format(f: &Value) -> Result<Option<Constraint>, ApiError> {
    let bad = |m: String| ApiError::bad("response_format", m);
    let kind = f
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("response_format needs a string `type`".into()))?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Constraint::JsonObject)),
        "json_schema" => {
            let spec = f.get("json_schema").ok_or_else(|| {
                bad("response_format `json_schema` needs a `json_schema` object".into())
            })?;
            match spec.get("schema") {
                Some(s) => Ok(Some(Constraint::JsonSchema(schema_of(
                    s,
                    "response_format",
                )?))),
                // OpenAI makes the schema optional: then any JSON object.
                None => Ok(Some(Constraint::JsonObject)),
            }
        }
        other => Err(bad(format!(
            "response_format `{other}` is not supported (text, json_object or json_schema)"
        ))),
    }
}

/// Options vLLM accepts beside the constraint that change nothing here: output is always
/// compact JSON and there is one backend.
const IGNORED_OPTIONS: &[&str] = &["disable_any_whitespace", "disable_fallback", "backend"];

fn structured_outputs(s: &Value) -> Result<Option<Constraint>, ApiError> {
    let bad = |m: String| ApiError::bad("structured_outputs", m);
    let obj = s
        .as_object()
        .ok_or_else(|| bad("structured_outputs must be an object".into()))?;
    let mut found = Vec::new();
    for (key, v) in obj {
        if v.is_null() || IGNORED_OPTIONS.contains(&key.as_str()) {
            continue;
        }
        let text = || {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("structured_outputs.{key} must be a string")))
        };
        let k = match key.as_str() {
            "json" => Constraint::JsonSchema(schema_of(v, "structured_outputs")?),
            "regex" => Constraint::Regex(text()?),
            "grammar" => Constraint::Lark(text()?),
            "choice" => {
                Constraint::Choice(serde_json::from_value(v.clone()).map_err(|_| {
                    bad("structured_outputs.choice must be a list of strings".into())
                })?)
            }
            "json_object" if v.as_bool() == Some(true) => Constraint::JsonObject,
            "json_object" => continue,
            other => {
                return Err(bad(format!(
                    "structured_outputs.{other} is not supported (json, regex, choice, grammar, json_object)"
                )));
            }
        };
        found.push(k);
    }
    if found.len() > 1 {
        return Err(bad("structured_outputs takes one constraint".into()));
    }
    Ok(found.pop())
}

/// A JSON schema given as an object, `true`, or a string holding one (vLLM accepts all).
fn schema_of(v: &Value, param: &str) -> Result<Value, ApiError> {
    let schema = match v {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| ApiError::bad(param, format!("the JSON schema does not parse: {e}")))?,
        other => other.clone(),
    };
    match schema {
        Value::Object(_) => Ok(schema),
        Value::Bool(true) => Ok(serde_json::json!({})),
        _ => Err(ApiError::bad(param, "a JSON schema must be an object")),
    }
}

/// Compiles the request's constraint, if any, on the blocking pool: a 400 naming the field
/// when the schema, regex or grammar is wrong, before anything is queued.
pub async fn compile(
    st: &AppState,
    loaded: &Loaded,
    c: &CommonParams,
) -> Result<Option<Arc<CompiledGrammar>>, ApiError> {
    match constraint(c)? {
        Some((param, k)) => compile_constraint(st, loaded, param, k).await.map(Some),
        None => Ok(None),
    }
}

/// Compiles one constraint; errors name `param`, the field it came from.
pub async fn compile_constraint(
    st: &AppState,
    loaded: &Loaded,
    param: &'static str,
    constraint: Constraint,
) -> Result<Arc<CompiledGrammar>, ApiError> {
    let compiler = loaded.grammar.clone();
    st.tokenize_pool
        .run(move || {
            compiler.compile(&constraint).map_err(|e| match e {
                GuidedError::Invalid(m) => ApiError::bad(param, format!("{param}: {m}")),
                e @ GuidedError::Unavailable(_) => ApiError::bad(param, e.to_string()),
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> CommonParams {
        serde_json::from_value(v).unwrap()
    }

    fn param_of(e: ApiError) -> Option<String> {
        match e {
            ApiError::BadRequest { param, .. } => param,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn each_spelling_maps_to_its_constraint() {
        let schema =
            serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let cases = [
            (
                serde_json::json!({"response_format": {"type": "text"}}),
                None,
            ),
            (
                serde_json::json!({"response_format": {"type": "json_object"}}),
                Some(Constraint::JsonObject),
            ),
            (
                serde_json::json!({"response_format": {"type": "json_schema",
                    "json_schema": {"name": "x", "schema": schema, "strict": true}}}),
                Some(Constraint::JsonSchema(schema.clone())),
            ),
            (
                serde_json::json!({"structured_outputs": {"json": schema.to_string()}}),
                Some(Constraint::JsonSchema(schema.clone())),
            ),
            (
                serde_json::json!({"structured_outputs": {"regex": "[0-9]+", "disable_fallback": true}}),
                Some(Constraint::Regex("[0-9]+".into())),
            ),
            (
                serde_json::json!({"structured_outputs": {"choice": ["yes", "no"]}}),
                Some(Constraint::Choice(vec!["yes".into(), "no".into()])),
            ),
            (
                serde_json::json!({"guided_grammar": "start: \"a\""}),
                Some(Constraint::Lark("start: \"a\"".into())),
            ),
            (
                serde_json::json!({"guided_json": schema}),
                Some(Constraint::JsonSchema(schema.clone())),
            ),
            (serde_json::json!({}), None),
        ];
        for (body, want) in cases {
            let got = constraint(&params(body.clone())).unwrap().map(|c| c.1);
            assert_eq!(got, want, "{body}");
        }
    }

    #[test]
    fn wrong_or_doubled_constraints_are_400s_naming_the_field() {
        let cases = [
            (
                serde_json::json!({"response_format": {"type": "xml"}}),
                "response_format",
            ),
            (
                serde_json::json!({"response_format": {"type": "json_schema"}}),
                "response_format",
            ),
            (
                serde_json::json!({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}),
                "response_format",
            ),
            (
                serde_json::json!({"structured_outputs": {"structural_tag": "x"}}),
                "structured_outputs",
            ),
            (
                serde_json::json!({"structured_outputs": {"regex": 5}}),
                "structured_outputs",
            ),
            (
                serde_json::json!({"structured_outputs": {"regex": "a", "choice": ["b"]}}),
                "structured_outputs",
            ),
            (
                serde_json::json!({"response_format": {"type": "json_object"}, "guided_regex": "a"}),
                "guided_regex",
            ),
            (
                serde_json::json!({"guided_json": "{not json"}),
                "guided_json",
            ),
        ];
        for (body, field) in cases {
            let e = constraint(&params(body.clone())).unwrap_err();
            assert_eq!(param_of(e).as_deref(), Some(field), "{body}");
        }
    }
}
