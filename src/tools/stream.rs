//! Cuts tool calls out of generated text as it streams: text outside calls passes through as
//! content (less a possible marker's first characters, held until they are told apart), each
//! call goes out once it is complete. The non-streamed answer is this same streamer run over
//! the whole text, so the two agree however the text was split.

use super::parse::{call_of, calls_in};
use super::{ToolCall, ToolCallFormat};

/// How the output is to be read.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolMode {
    /// `tool_choice: auto`: free text in which the model may write calls in its format.
    Auto {
        format: ToolCallFormat,
        parallel: bool,
    },
    /// `tool_choice: required`: the grammar makes the output a JSON array of
    /// `{"name": .., "parameters": {..}}` (see [`super::required_calls_schema`]).
    Required,
    /// A named function: the grammar makes the whole output its arguments object.
    Named(String),
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDelta {
    Content(String),
    /// A call begins: its position among the calls and the function's name.
    Call {
        index: usize,
        name: String,
    },
    /// More of the arguments text of call `index`.
    Arguments {
        index: usize,
        fragment: String,
    },
}

/// A whole answer: its content and its calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolsOutput {
    pub content: String,
    pub calls: Vec<ToolCall>,
}

impl ToolsOutput {
    pub fn from_deltas(deltas: impl IntoIterator<Item = ToolDelta>) -> Self {
        let mut out = Self::default();
        for d in deltas {
            match d {
                ToolDelta::Content(s) => out.content.push_str(&s),
                ToolDelta::Call { name, .. } => out.calls.push(ToolCall {
                    name,
                    arguments: String::new(),
                }),
                ToolDelta::Arguments { index, fragment } => {
                    if let Some(c) = out.calls.get_mut(index) {
                        c.arguments.push_str(&fragment);
                    }
                }
            }
        }
        out
    }
}

/// Where the auto-mode reader is.
#[derive(Debug)]
enum AutoState {
    /// Before any non-blank text (Llama 3 decides here whether the reply is a call).
    Start,
    /// In free text; `pending` may be the beginning of a start marker.
    Text,
    /// After a start marker; `pending` is the call's body so far.
    InCall,
    /// Llama 3: the reply is a call (or several); all of it is read at the end.
    WholeReply,
}

/// The required-mode reader's place in the JSON array.
#[derive(Debug, Default)]
struct ArrayScan {
    opened: bool,
    closed: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    element: String,
}

pub struct ToolStreamer {
    mode: ToolMode,
    auto: AutoState,
    pending: String,
    /// Blank content that is dropped if a call follows it (or ends the reply).
    held_blank: String,
    /// Blank content right after a call is dropped too.
    after_call: bool,
    calls: usize,
    scan: ArrayScan,
    /// Everything pushed in required mode, returned as content if it is not an array.
    raw: String,
}

const PYTHON_TAG: &str = "<|python_tag|>";

fn markers(format: ToolCallFormat) -> (&'static str, Option<&'static str>) {
    match format {
        ToolCallFormat::Hermes => ("<tool_call>", Some("</tool_call>")),
        ToolCallFormat::Mistral => ("[TOOL_CALLS]", None),
        ToolCallFormat::Llama3Json => (PYTHON_TAG, None),
    }
}

/// Bytes at the end of `text` that could begin `marker` (kept back until more text shows).
fn partial_marker_len(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&k| {
            text.is_char_boundary(text.len() - k) && marker.starts_with(&text[text.len() - k..])
        })
        .unwrap_or(0)
}

impl ToolStreamer {
    pub fn new(mode: ToolMode) -> Self {
        Self {
            mode,
            auto: AutoState::Start,
            pending: String::new(),
            held_blank: String::new(),
            after_call: false,
            calls: 0,
            scan: ArrayScan::default(),
            raw: String::new(),
        }
    }

    /// The whole answer for a whole text.
    pub fn parse_all(mode: ToolMode, text: &str) -> ToolsOutput {
        let mut s = Self::new(mode);
        let mut deltas = s.push(text);
        deltas.extend(s.finish());
        ToolsOutput::from_deltas(deltas)
    }

    /// Whether any call has been emitted.
    pub fn has_calls(&self) -> bool {
        self.calls > 0
    }

    pub fn push(&mut self, text: &str) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        match self.mode.clone() {
            ToolMode::Auto { format, parallel } => {
                self.pending.push_str(text);
                self.auto_step(format, parallel, false, &mut out);
            }
            ToolMode::Required => self.required_step(text, &mut out),
            ToolMode::Named(name) => {
                if self.calls == 0 {
                    self.calls = 1;
                    out.push(ToolDelta::Call { index: 0, name });
                }
                if !text.is_empty() {
                    out.push(ToolDelta::Arguments {
                        index: 0,
                        fragment: text.to_string(),
                    });
                }
            }
        }
        out
    }

    /// Whatever is still held, at the end of the output.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        match self.mode.clone() {
            ToolMode::Auto { format, parallel } => self.auto_step(format, parallel, true, &mut out),
            ToolMode::Required => {
                if !self.scan.closed {
                    let rest = if self.calls == 0 {
                        std::mem::take(&mut self.raw)
                    } else {
                        std::mem::take(&mut self.scan.element)
                    };
                    self.content(&rest, &mut out);
                }
            }
            ToolMode::Named(_) => {
                if self.calls == 0 {
                    out.extend(self.push(""));
                }
            }
        }
        if self.calls == 0 {
            let blank = std::mem::take(&mut self.held_blank);
            if !blank.is_empty() {
                out.push(ToolDelta::Content(blank));
            }
        }
        out
    }

    /// Content text, less blank runs next to calls.
    fn content(&mut self, text: &str, out: &mut Vec<ToolDelta>) {
        let text = if self.after_call {
            text.trim_start()
        } else {
            text
        };
        if text.is_empty() {
            return;
        }
        self.after_call = false;
        let mut all = std::mem::take(&mut self.held_blank);
        all.push_str(text);
        let shown = all.trim_end().len();
        if shown > 0 {
            out.push(ToolDelta::Content(all[..shown].to_string()));
        }
        self.held_blank = all[shown..].to_string();
    }

    fn calls_out(&mut self, calls: Vec<ToolCall>, parallel: bool, out: &mut Vec<ToolDelta>) {
        self.held_blank.clear();
        self.after_call = true;
        for c in calls {
            if !parallel && self.calls >= 1 {
                break;
            }
            let index = self.calls;
            self.calls += 1;
            out.push(ToolDelta::Call {
                index,
                name: c.name,
            });
            out.push(ToolDelta::Arguments {
                index,
                fragment: c.arguments,
            });
        }
    }

    fn auto_step(
        &mut self,
        format: ToolCallFormat,
        parallel: bool,
        end: bool,
        out: &mut Vec<ToolDelta>,
    ) {
        let (start, stop) = markers(format);
        loop {
            match self.auto {
                AutoState::Start => {
                    let lead = self.pending.len() - self.pending.trim_start().len();
                    let rest = &self.pending[lead..];
                    if rest.is_empty() && !end {
                        return;
                    }
                    if format == ToolCallFormat::Llama3Json {
                        if rest.starts_with('{') || rest.starts_with(PYTHON_TAG) {
                            self.auto = AutoState::WholeReply;
                            continue;
                        }
                        if !end && PYTHON_TAG.starts_with(rest) {
                            return;
                        }
                    }
                    self.auto = AutoState::Text;
                }
                AutoState::Text => {
                    if format == ToolCallFormat::Llama3Json {
                        let text = std::mem::take(&mut self.pending);
                        self.content(&text, out);
                        return;
                    }
                    if let Some(at) = self.pending.find(start) {
                        let before = self.pending[..at].to_string();
                        self.content(&before, out);
                        self.pending.drain(..at + start.len());
                        self.auto = AutoState::InCall;
                        continue;
                    }
                    let keep = if end {
                        0
                    } else {
                        partial_marker_len(&self.pending, start)
                    };
                    let shown = self.pending.len() - keep;
                    let text: String = self.pending.drain(..shown).collect();
                    self.content(&text, out);
                    return;
                }
                AutoState::InCall => {
                    // The body ends at the end marker, at the next start marker when the
                    // format has no end marker, or at the end of the output.
                    let found = match stop {
                        Some(stop) => self.pending.find(stop).map(|at| (at, stop.len())),
                        None => self.pending.find(start).map(|at| (at, 0)),
                    };
                    let (body_len, skip) = match found {
                        Some(f) => f,
                        None if end => (self.pending.len(), 0),
                        None => return,
                    };
                    let body: String = self.pending.drain(..body_len).collect();
                    let closing: String = self.pending.drain(..skip).collect();
                    match calls_in(format, &body) {
                        Some(calls) => self.calls_out(calls, parallel, out),
                        None => {
                            let raw = format!("{start}{body}{closing}");
                            self.content(&raw, out);
                        }
                    }
                    self.auto = if stop.is_none() && found.is_some() {
                        self.pending.drain(..start.len());
                        AutoState::InCall
                    } else {
                        AutoState::Text
                    };
                    if self.pending.is_empty() && !end {
                        return;
                    }
                    if self.pending.is_empty() && matches!(self.auto, AutoState::Text) {
                        return;
                    }
                }
                AutoState::WholeReply => {
                    if !end {
                        return;
                    }
                    let text = std::mem::take(&mut self.pending);
                    match calls_in(format, &text) {
                        Some(calls) => self.calls_out(calls, parallel, out),
                        None => self.content(&text, out),
                    }
                    return;
                }
            }
        }
    }

    fn required_step(&mut self, text: &str, out: &mut Vec<ToolDelta>) {
        self.raw.push_str(text);
        for ch in text.chars() {
            let s = &mut self.scan;
            if s.closed {
                break;
            }
            if !s.opened {
                if ch == '[' {
                    s.opened = true;
                }
                continue;
            }
            if s.depth == 0 {
                match ch {
                    '{' => {
                        s.depth = 1;
                        s.element.clear();
                        s.element.push(ch);
                    }
                    ']' => s.closed = true,
                    _ => {}
                }
                continue;
            }
            s.element.push(ch);
            if s.in_string {
                match (s.escaped, ch) {
                    (true, _) => s.escaped = false,
                    (false, '\\') => s.escaped = true,
                    (false, '"') => s.in_string = false,
                    _ => {}
                }
                continue;
            }
            match ch {
                '"' => s.in_string = true,
                '{' | '[' => s.depth += 1,
                '}' | ']' => {
                    s.depth -= 1;
                    if s.depth == 0 {
                        let element = std::mem::take(&mut s.element);
                        let call = serde_json::from_str(&element)
                            .ok()
                            .and_then(|v| call_of(&v));
                        match call {
                            Some(c) => self.calls_out(vec![c], true, out),
                            None => self.content(&element, out),
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn auto(format: ToolCallFormat) -> ToolMode {
        ToolMode::Auto {
            format,
            parallel: true,
        }
    }

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn out(content: &str, calls: Vec<ToolCall>) -> ToolsOutput {
        ToolsOutput {
            content: content.into(),
            calls,
        }
    }

    #[test]
    fn whole_answers_per_format() {
        use ToolCallFormat::*;
        let cases = [
            (
                auto(Hermes),
                "Just text, no <tools>.",
                out("Just text, no <tools>.", vec![]),
            ),
            (
                auto(Hermes),
                "Let me check.\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\": \"Lahore\"}}\n</tool_call>\n<tool_call>{\"name\": \"t\", \"arguments\": {}}</tool_call>\n",
                out(
                    "Let me check.",
                    vec![call("w", r#"{"c":"Lahore"}"#), call("t", "{}")],
                ),
            ),
            // Unterminated at the end of the output: still a call when the body parses.
            (
                auto(Hermes),
                "<tool_call>{\"name\": \"w\", \"arguments\": {}}",
                out("", vec![call("w", "{}")]),
            ),
            // A malformed call is content, marker and all.
            (
                auto(Hermes),
                "A <tool_call>{\"name\": oops}</tool_call> B",
                out("A <tool_call>{\"name\": oops}</tool_call> B", vec![]),
            ),
            (auto(Hermes), "a <tool_ca", out("a <tool_ca", vec![])),
            (
                ToolMode::Auto {
                    format: Hermes,
                    parallel: false,
                },
                "<tool_call>{\"name\": \"a\"}</tool_call><tool_call>{\"name\": \"b\"}</tool_call>",
                out("", vec![call("a", "{}")]),
            ),
            (
                auto(Llama3Json),
                " {\"name\": \"a\", \"parameters\": {\"x\": 1}}",
                out("", vec![call("a", r#"{"x":1}"#)]),
            ),
            (
                auto(Llama3Json),
                "{\"x\": 1} is JSON",
                out("{\"x\": 1} is JSON", vec![]),
            ),
            (
                auto(Llama3Json),
                "Hello {\"name\": \"a\"}",
                out("Hello {\"name\": \"a\"}", vec![]),
            ),
            (
                auto(Mistral),
                "Sure.[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}]",
                out("Sure.", vec![call("a", "{}")]),
            ),
            (
                auto(Mistral),
                "[TOOL_CALLS]a[ARGS]{\"q\": 1}[TOOL_CALLS]b[ARGS]{}",
                out("", vec![call("a", r#"{"q":1}"#), call("b", "{}")]),
            ),
            (
                ToolMode::Required,
                r#"[{"name":"a","parameters":{"x":[1,{"y":"}]"}]}},{"name":"b","parameters":{}}]"#,
                out(
                    "",
                    vec![call("a", r#"{"x":[1,{"y":"}]"}]}"#), call("b", "{}")],
                ),
            ),
            (
                ToolMode::Required,
                r#"[{"name":"a","parameters":{"x":"#,
                out(r#"[{"name":"a","parameters":{"x":"#, vec![]),
            ),
            (
                ToolMode::Named("f".into()),
                r#"{"x":1}"#,
                out("", vec![call("f", r#"{"x":1}"#)]),
            ),
            (auto(Hermes), "  \n", out("  \n", vec![])),
        ];
        for (mode, text, want) in cases {
            assert_eq!(
                ToolStreamer::parse_all(mode.clone(), text),
                want,
                "{mode:?} {text:?}"
            );
        }
    }

    #[test]
    fn a_call_goes_out_name_first_then_arguments() {
        let mut s = ToolStreamer::new(auto(ToolCallFormat::Hermes));
        assert_eq!(s.push("Hi <tool"), vec![ToolDelta::Content("Hi".into())]);
        assert_eq!(s.push("_call>{\"name\": \"f\", "), vec![]);
        assert_eq!(
            s.push("\"arguments\": {}}</tool_call>"),
            vec![
                ToolDelta::Call {
                    index: 0,
                    name: "f".into()
                },
                ToolDelta::Arguments {
                    index: 0,
                    fragment: "{}".into()
                },
            ]
        );
        assert!(s.has_calls());
        assert_eq!(s.finish(), vec![]);
    }

    fn samples() -> Vec<(ToolMode, &'static str)> {
        use ToolCallFormat::*;
        vec![
            (
                auto(Hermes),
                "Let me check. \n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\": \"ڈیٹا\"}}\n</tool_call> then <tool_call>bad</tool_call> done <tool_c",
            ),
            (
                auto(Mistral),
                "x [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}][TOOL_CALLS]b[ARGS]{\"k\": \"v\"}",
            ),
            (
                auto(Llama3Json),
                "  <|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"q\": 1}}",
            ),
            (auto(Llama3Json), "  plain answer with { braces }"),
            (
                ToolMode::Required,
                r#"[{"name":"a","parameters":{"s":"\"]}"}},{"name":"b","parameters":{}}]"#,
            ),
            (
                ToolMode::Named("f".into()),
                r#"{"city":"Karachi","days":[1,2]}"#,
            ),
        ]
    }

    proptest! {
        /// However the text arrives, the streamed pieces add up to the whole answer.
        #[test]
        fn any_split_gives_the_whole_answer(which in 0usize..6, cuts in proptest::collection::vec(0usize..200, 0..12)) {
            let (mode, text) = samples()[which].clone();
            let whole = ToolStreamer::parse_all(mode.clone(), text);
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).filter(|&c| text.is_char_boundary(c)).collect();
            bounds.push(0);
            bounds.push(text.len());
            bounds.sort_unstable();
            bounds.dedup();
            let mut s = ToolStreamer::new(mode);
            let mut deltas = Vec::new();
            for w in bounds.windows(2) {
                deltas.extend(s.push(&text[w[0]..w[1]]));
            }
            deltas.extend(s.finish());
            prop_assert_eq!(ToolsOutput::from_deltas(deltas), whole);
        }
    }
}
