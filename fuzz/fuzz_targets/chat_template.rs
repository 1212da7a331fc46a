//! Chat templates with hostile conversations: the real templates of the repository (the
//! shipped `templates/*.jinja`, the fixtures' tokenizer_config.json and GGUF files) rendered
//! with arbitrary roles, contents, tool calls and tools. Errors (a template's
//! `raise_exception`, a missing field) are fine; a panic is a bug, and so is output out of
//! proportion to the input — the template is fixed, so its output can only grow with what
//! the request carries.

#![no_main]

use arbitrary::Arbitrary;
use indus::tokenizer::{ChatMessage, ChatTemplate};
use indus_fuzz::ArbJson;
use indus_models::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::LazyLock;

/// Every distinct chat template in the repository.
static TEMPLATES: LazyLock<Vec<ChatTemplate>> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sources: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !sources.contains(&s) {
            sources.push(s);
        }
    };
    for path in files(&root.join("templates"), "jinja") {
        add(std::fs::read_to_string(&path).expect("fuzz setup: template"));
    }
    for dir in files(&root.join("tests/fixtures"), "") {
        let cfg = dir.join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&cfg) else {
            continue;
        };
        let cfg: Value = serde_json::from_str(&text).expect("fuzz setup: tokenizer_config");
        match cfg.get("chat_template") {
            Some(Value::String(s)) => add(s.clone()),
            Some(Value::Array(named)) => named
                .iter()
                .filter_map(|t| t.get("template")?.as_str())
                .for_each(|s| add(s.to_string())),
            _ => {}
        }
    }
    for path in files(&root.join("tests/fixtures/gguf"), "gguf") {
        let f = GgufFile::open(&path).expect("fuzz setup: GGUF fixture");
        if let Some(s) = f.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            add(s.to_string());
        }
    }
    assert!(
        sources.len() >= 2,
        "fuzz setup: found {} templates",
        sources.len()
    );
    sources
        .into_iter()
        .map(|s| ChatTemplate::new(s, "<s>".into(), "</s>".into()).expect("fuzz setup: compile"))
        .collect()
});

/// Entries of `dir` (sorted, so template indices are stable): files ending in `.ext`, or
/// every entry when `ext` is empty.
fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("fuzz setup: {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| ext.is_empty() || p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

#[derive(Debug, Arbitrary)]
enum Role {
    System,
    User,
    Assistant,
    Tool,
    Developer,
    Ipython,
    Other(String),
}

/// Text that templates and tokenizers give meaning to, so contents reach those paths.
const PIECES: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<</SYS>>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<|eot_id|>",
    "\n",
    " ",
    "\u{FFFD}",
    "\"",
    "\\",
    "'",
];

#[derive(Debug, Arbitrary)]
enum Content {
    Text(String),
    Pieces(Vec<u8>),
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Pieces(p) => p
                .iter()
                .map(|&i| PIECES[i as usize % PIECES.len()])
                .collect(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Call {
    /// The shape the server hands templates (arguments parsed into a value).
    Function {
        id: Option<String>,
        name: String,
        arguments: ArbJson,
    },
    /// Whatever a library caller might pass.
    Raw(ArbJson),
}

#[derive(Debug, Arbitrary)]
struct Message {
    role: Role,
    content: Content,
    tool_calls: Option<Vec<Call>>,
    tool_call_id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Arbitrary)]
enum Tool {
    Function {
        name: String,
        description: Option<String>,
        parameters: Option<ArbJson>,
    },
    Raw(ArbJson),
}

#[derive(Debug, Arbitrary)]
struct Input {
    template: u8,
    messages: Vec<Message>,
    tools: Option<Vec<Tool>>,
    add_generation_prompt: bool,
}

fn message(m: &Message) -> ChatMessage {
    let role = match &m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Developer => "developer",
        Role::Ipython => "ipython",
        Role::Other(r) => r,
    };
    let mut msg = ChatMessage::new(role, &m.content.text());
    msg.tool_calls = m.tool_calls.as_ref().map(|calls| {
        calls
            .iter()
            .map(|c| match c {
                Call::Function {
                    id,
                    name,
                    arguments,
                } => json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": arguments.0},
                }),
                Call::Raw(v) => v.0.clone(),
            })
            .collect()
    });
    msg.tool_call_id = m.tool_call_id.clone();
    msg.name = m.name.clone();
    msg
}

fn tool(t: &Tool) -> Value {
    match t {
        Tool::Function {
            name,
            description,
            parameters,
        } => json!({
            "type": "function",
            "function": {"name": name, "description": description,
                         "parameters": parameters.as_ref().map(|p| &p.0)},
        }),
        Tool::Raw(v) => v.0.clone(),
    }
}

fuzz_target!(|input: Input| {
    let templates = &*TEMPLATES;
    let t = &templates[input.template as usize % templates.len()];
    let messages: Vec<ChatMessage> = input.messages.iter().map(message).collect();
    let tools: Option<Vec<Value>> = input.tools.as_ref().map(|ts| ts.iter().map(tool).collect());
    let Ok(out) = t.render(&messages, tools.as_deref(), input.add_generation_prompt) else {
        return;
    };
    // Each message and tool at most shows the template's own text once more, and its data
    // a few times escaped (tojson writes `<` as six bytes).
    let data = serde_json::to_string(&messages).map_or(0, |s| s.len())
        + serde_json::to_string(&tools).map_or(0, |s| s.len());
    let items = messages.len() + tools.as_ref().map_or(0, Vec::len) + 2;
    let bound = 4096 + 16 * data + t.source().len() * items;
    assert!(
        out.len() <= bound,
        "{} output bytes from {data} bytes of messages and tools (bound {bound})",
        out.len()
    );
});
