//! Shared pieces of the fuzz targets: the repository's tokenizer fixtures (loaded once per
//! process, never from `../shared`) and bounded arbitrary JSON.

use arbitrary::{Arbitrary, Unstructured};
use indus::tokenizer::Tokenizer;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A tokenizer fixture of `tests/fixtures/<name>` (tokenizer.json and its configs).
pub fn fixture_tokenizer(name: &str) -> Arc<Tokenizer> {
    let dir = indus::loader::repo_fixture(name);
    match Tokenizer::from_dir(&dir, &[], None) {
        Ok(t) => Arc::new(t),
        Err(e) => panic!("fuzz setup: tokenizer fixture {}: {e}", dir.display()),
    }
}

/// JSON values nest at most this deep: deep enough for every shape the API reads, shallow
/// enough that building one never recurses far.
const MAX_DEPTH: usize = 4;

/// An arbitrary JSON value (objects and arrays of bounded depth).
#[derive(Debug, Clone)]
pub struct ArbJson(pub Value);

impl<'a> Arbitrary<'a> for ArbJson {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        json(u, 0).map(ArbJson)
    }
}

fn json(u: &mut Unstructured<'_>, depth: usize) -> arbitrary::Result<Value> {
    let kinds = if depth >= MAX_DEPTH { 5 } else { 7 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        4 => Value::String(u.arbitrary()?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| json(u, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut m = Map::new();
            for _ in 0..n {
                let k = key(u)?;
                m.insert(k, json(u, depth + 1)?);
            }
            Value::Object(m)
        }
    })
}

/// An object key: mostly names the API or templates read, so the fuzzer reaches past the
/// "unknown field" paths.
pub fn key(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    const KEYS: &[&str] = &[
        "type",
        "function",
        "name",
        "arguments",
        "parameters",
        "description",
        "id",
        "properties",
        "required",
        "items",
        "enum",
        "schema",
        "json_schema",
        "strict",
        "content",
        "role",
        "text",
    ];
    if u.ratio(3, 4)? {
        Ok((*u.choose(KEYS)?).to_string())
    } else {
        u.arbitrary()
    }
}
