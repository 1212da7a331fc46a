//! The grammar behind `tool_choice: required`: a JSON array of calls, each naming one of the
//! offered functions and carrying arguments that match that function's schema.

use super::FunctionSpec;
use serde_json::{Map, Value, json};

/// Definitions move to the root (refs are resolved from there), renamed per function so two
/// functions' `$defs` cannot collide.
fn hoist_definitions(fn_index: usize, mut schema: Value, defs: &mut Map<String, Value>) -> Value {
    let prefix = format!("f{fn_index}_");
    if let Some(obj) = schema.as_object_mut() {
        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(d)) = obj.remove(key) {
                for (name, mut def) in d {
                    rewrite_refs(&mut def, &prefix);
                    defs.insert(format!("{prefix}{name}"), def);
                }
            }
        }
    }
    rewrite_refs(&mut schema, &prefix);
    schema
}

fn rewrite_refs(v: &mut Value, prefix: &str) {
    match v {
        Value::Object(obj) => {
            for (k, child) in obj.iter_mut() {
                if k == "$ref"
                    && let Value::String(r) = child
                {
                    for from in ["#/$defs/", "#/definitions/"] {
                        if let Some(name) = r.strip_prefix(from) {
                            *r = format!("#/$defs/{prefix}{name}");
                            break;
                        }
                    }
                } else {
                    rewrite_refs(child, prefix);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_refs(i, prefix)),
        _ => {}
    }
}

/// `[{"name": <one of the functions>, "parameters": <its arguments>}, ...]`, at least one
/// call, at most one unless `parallel`.
pub fn required_calls_schema(functions: &[FunctionSpec], parallel: bool) -> Value {
    let mut defs = Map::new();
    let alternatives: Vec<Value> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let params = f
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            let params = hoist_definitions(i, params, &mut defs);
            json!({
                "type": "object",
                "properties": {"name": {"const": f.name}, "parameters": params},
                "required": ["name", "parameters"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut schema = json!({
        "type": "array",
        "minItems": 1,
        "items": {"anyOf": alternatives},
    });
    if !parallel {
        schema["maxItems"] = json!(1);
    }
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_hoisted_and_refs_follow_them() {
        let f = FunctionSpec {
            name: "book".into(),
            parameters: Some(json!({
                "type": "object",
                "properties": {"slot": {"$ref": "#/$defs/Slot"}},
                "$defs": {"Slot": {"type": "object", "properties": {
                    "next": {"$ref": "#/$defs/Slot"}}}},
            })),
        };
        let g = FunctionSpec {
            name: "cancel".into(),
            parameters: None,
        };
        let s = required_calls_schema(&[f, g], false);
        assert_eq!(s["maxItems"], 1);
        assert_eq!(s["minItems"], 1);
        let alts = s["items"]["anyOf"].as_array().unwrap();
        assert_eq!(alts[0]["properties"]["name"]["const"], "book");
        assert_eq!(
            alts[0]["properties"]["parameters"]["properties"]["slot"]["$ref"],
            "#/$defs/f0_Slot"
        );
        assert_eq!(
            s["$defs"]["f0_Slot"]["properties"]["next"]["$ref"],
            "#/$defs/f0_Slot"
        );
        assert_eq!(
            alts[1]["properties"]["parameters"],
            json!({"type": "object"})
        );
        assert!(
            required_calls_schema(&alts_specs(), true)
                .get("maxItems")
                .is_none()
        );
    }

    fn alts_specs() -> Vec<FunctionSpec> {
        vec![FunctionSpec {
            name: "a".into(),
            parameters: None,
        }]
    }
}
