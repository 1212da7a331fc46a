//! The real server on an ephemeral port with a fixture model, driven by the `async-openai`
//! SDK unmodified (plus raw HTTP where the SDK hides what we check).

mod common_server;

use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessageArgs,
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions,
    CreateChatCompletionRequestArgs, FinishReason, Prompt, StopConfiguration,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use common_server::{MODEL_NAME, TestServer, post_json, sse_data};
use futures::StreamExt;
use serde_json::json;

fn user(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessageArgs::default()
        .content(text)
        .build()
        .unwrap()
        .into()
}

fn system(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestSystemMessageArgs::default()
        .content(text)
        .build()
        .unwrap()
        .into()
}

#[tokio::test]
async fn sdk_lists_models_and_completes() {
    let s = TestServer::start(&[]);
    let client = s.openai();

    let models = client.models().list().await.unwrap();
    assert_eq!(models.object, "list");
    assert_eq!(models.data.len(), 1);
    assert_eq!(models.data[0].id, MODEL_NAME);
    assert_eq!(models.data[0].owned_by, "indus");

    let req = CreateCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .prompt("The capital of France is")
        .max_tokens(8u32)
        .temperature(0.0)
        .build()
        .unwrap();
    let resp = client.completions().create(req).await.unwrap();
    assert_eq!(resp.object, "text_completion");
    assert_eq!(resp.model, MODEL_NAME);
    assert!(resp.id.starts_with("cmpl-"));
    assert_eq!(resp.choices.len(), 1);
    let usage = resp.usage.unwrap();
    assert!(usage.prompt_tokens >= 6, "{usage:?}");
    assert!((1..=8).contains(&usage.completion_tokens), "{usage:?}");
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert!(resp.choices[0].finish_reason.is_some());
    assert!(!resp.choices[0].text.is_empty());

    let req = CreateChatCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .messages(vec![system("You are terse."), user("Say hi.")])
        .max_completion_tokens(6u32)
        .seed(3)
        .build()
        .unwrap();
    let resp = client.chat().create(req).await.unwrap();
    assert_eq!(resp.object, "chat.completion");
    assert!(resp.id.starts_with("chatcmpl-"));
    assert_eq!(resp.choices.len(), 1);
    let usage = resp.usage.unwrap();
    assert!(
        usage.prompt_tokens > 10,
        "the chat template adds tokens: {usage:?}"
    );
    assert!((1..=6).contains(&usage.completion_tokens));
    let finish = resp.choices[0].finish_reason.unwrap();
    assert!(matches!(finish, FinishReason::Stop | FinishReason::Length));
    assert!(resp.choices[0].message.content.is_some());
}

#[tokio::test]
async fn streaming_with_usage_matches_the_unstreamed_result() {
    let s = TestServer::start(&[]);
    let client = s.openai();
    let base = CreateChatCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .messages(vec![user("Tell me a story.")])
        .max_completion_tokens(24u32)
        .temperature(1.0)
        .seed(11)
        .build()
        .unwrap();
    let whole = client.chat().create(base.clone()).await.unwrap();
    let want = whole.choices[0].message.content.clone().unwrap();

    let mut req = base.clone();
    req.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: Some(true),
        include_obfuscation: None,
    });
    let mut stream = client.chat().create_stream(req).await.unwrap();
    let mut text = String::new();
    let mut usage = None;
    let mut finish = None;
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        chunks += 1;
        assert_eq!(chunk.object, "chat.completion.chunk");
        assert_eq!(chunk.id, chunks_id(&chunk.id));
        if let Some(u) = chunk.usage {
            assert!(chunk.choices.is_empty(), "the usage chunk has no choices");
            usage = Some(u);
        }
        for c in chunk.choices {
            text.push_str(c.delta.content.as_deref().unwrap_or(""));
            if c.finish_reason.is_some() {
                finish = c.finish_reason;
            }
        }
    }
    assert!(chunks > 2);
    assert_eq!(
        text, want,
        "streamed deltas concatenate to the unstreamed text"
    );
    assert_eq!(finish, whole.choices[0].finish_reason);
    let usage = usage.expect("include_usage sends a usage chunk");
    let whole_usage = whole.usage.unwrap();
    assert_eq!(usage.prompt_tokens, whole_usage.prompt_tokens);
    assert_eq!(usage.completion_tokens, whole_usage.completion_tokens);

    // Legacy completions stream too.
    let req = CreateCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .prompt("Once upon a time")
        .max_tokens(10u32)
        .seed(5)
        .stream_options(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        })
        .build()
        .unwrap();
    let mut stream = client.completions().create_stream(req).await.unwrap();
    let mut got_usage = false;
    let mut streamed = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for c in &chunk.choices {
            streamed.push_str(&c.text);
        }
        if let Some(u) = chunk.usage {
            assert_eq!(u.completion_tokens, 10);
            got_usage = true;
        }
    }
    assert!(got_usage);
    assert!(!streamed.is_empty());
}

fn chunks_id(id: &str) -> String {
    assert!(id.starts_with("chatcmpl-"), "{id}");
    id.to_string()
}

#[tokio::test]
async fn n_choices_and_multiple_prompts() {
    let s = TestServer::start(&[]);
    let client = s.openai();
    let req = CreateCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .prompt("Hello")
        .n(2u8)
        .max_tokens(6u32)
        .seed(1)
        .build()
        .unwrap();
    let resp = client.completions().create(req).await.unwrap();
    let idx: Vec<u32> = resp.choices.iter().map(|c| c.index).collect();
    assert_eq!(idx, vec![0, 1]);
    let usage = resp.usage.unwrap();
    assert_eq!(
        usage.prompt_tokens, 2,
        "the prompt counts once whatever n is"
    );

    let req = CreateChatCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .messages(vec![user("Two answers please")])
        .n(2u8)
        .max_completion_tokens(5u32)
        .build()
        .unwrap();
    let mut stream = client.chat().create_stream(req).await.unwrap();
    let mut finished = [false, false];
    while let Some(chunk) = stream.next().await {
        for c in chunk.unwrap().choices {
            if c.finish_reason.is_some() {
                finished[c.index as usize] = true;
            }
        }
    }
    assert_eq!(finished, [true, true]);

    // Two prompts × n=2: choices 0..4, prompt-major.
    let req = CreateCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .prompt(vec!["first", "second prompt"])
        .n(2u8)
        .max_tokens(3u32)
        .build()
        .unwrap();
    let resp = client.completions().create(req).await.unwrap();
    let idx: Vec<u32> = resp.choices.iter().map(|c| c.index).collect();
    assert_eq!(idx, vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn seeds_reproduce_and_token_id_prompts_work() {
    let s = TestServer::start(&[]);
    let client = s.openai();
    let run = |seed: i64, prompt: Prompt| {
        let client = client.clone();
        async move {
            let req = CreateCompletionRequestArgs::default()
                .model(MODEL_NAME)
                .prompt(prompt)
                .max_tokens(16u32)
                .temperature(1.0)
                .seed(seed)
                .build()
                .unwrap();
            client.completions().create(req).await.unwrap()
        }
    };
    let text = |p: &str| Prompt::String(p.to_string());
    let a = run(42, text("Random words:")).await;
    let b = run(42, text("Random words:")).await;
    assert_eq!(a.choices[0].text, b.choices[0].text, "same seed, same text");
    let others: Vec<String> =
        futures::future::join_all((43..46).map(|seed| run(seed, text("Random words:"))))
            .await
            .into_iter()
            .map(|r| r.choices[0].text.clone())
            .collect();
    assert!(
        others.iter().any(|t| *t != a.choices[0].text),
        "different seeds should give some different text"
    );

    // Token ids: the same prompt as text (BOS + tokens) gives the same result.
    let tokenized = post_json(
        &s.url("/tokenize"),
        &json!({"prompt": "Random words:"}),
        None,
    )
    .await;
    assert_eq!(tokenized.0, 200);
    let ids: Vec<u32> = serde_json::from_value(tokenized.2["tokens"].clone()).unwrap();
    assert_eq!(ids[0], 1, "BOS");
    let c = run(42, Prompt::IntegerArray(ids.clone())).await;
    assert_eq!(c.usage.unwrap().prompt_tokens as usize, ids.len());
    assert_eq!(c.choices[0].text, a.choices[0].text);

    let d = run(
        7,
        Prompt::ArrayOfIntegerArray(vec![vec![1, 15043], vec![1, 450, 4996, 17354]]),
    )
    .await;
    assert_eq!(d.choices.len(), 2);
    assert_eq!(d.usage.unwrap().prompt_tokens, 6);

    let back = post_json(&s.url("/detokenize"), &json!({"tokens": ids}), None).await;
    assert_eq!(back.0, 200);
    assert!(back.2["prompt"].as_str().unwrap().contains("Random words:"));
}

#[tokio::test]
async fn stop_strings_cut_the_output() {
    let s = TestServer::start(&[]);
    let client = s.openai();
    let make = |stop: Option<StopConfiguration>| {
        let mut b = CreateCompletionRequestArgs::default();
        b.model(MODEL_NAME)
            .prompt("List:")
            .max_tokens(32u32)
            .temperature(1.0)
            .seed(9);
        if let Some(stop) = stop {
            b.stop(stop);
        }
        b.build().unwrap()
    };
    let full = client.completions().create(make(None)).await.unwrap();
    let text = full.choices[0].text.clone();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 12, "need some text to cut: {text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let want = &text[..text.find(&stop).unwrap()];

    let cut = client
        .completions()
        .create(make(Some(StopConfiguration::StringArray(vec![
            "never-appears-xyz".into(),
            stop.clone(),
        ]))))
        .await
        .unwrap();
    assert_eq!(cut.choices[0].text, want, "stop={stop:?}");
    assert_eq!(
        cut.choices[0].finish_reason,
        Some(async_openai::types::chat::CompletionFinishReason::Stop)
    );

    // The same through a stream: the stop string is never sent, even split across deltas.
    let mut req = make(Some(StopConfiguration::String(stop.clone())));
    req.stream = Some(true);
    let mut stream = client.completions().create_stream(req).await.unwrap();
    let mut streamed = String::new();
    while let Some(chunk) = stream.next().await {
        for c in chunk.unwrap().choices {
            streamed.push_str(&c.text);
        }
    }
    assert_eq!(streamed, want);
}

#[tokio::test]
async fn logprobs_in_both_shapes() {
    let s = TestServer::start(&[]);
    let client = s.openai();
    let req = CreateCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .prompt("Numbers:")
        .max_tokens(5u32)
        .logprobs(2u8)
        .seed(2)
        .build()
        .unwrap();
    let resp = client.completions().create(req).await.unwrap();
    let lp = resp.choices[0].logprobs.clone().expect("logprobs");
    let n = resp.usage.unwrap().completion_tokens as usize;
    assert_eq!(lp.tokens.len(), n);
    assert_eq!(lp.token_logprobs.len(), n);
    assert_eq!(lp.text_offset.len(), n);
    assert!(lp.token_logprobs.iter().all(|l| l.unwrap() <= 0.0));
    for top in &lp.top_logprobs {
        let m = top.as_object().unwrap();
        assert!((1..=2).contains(&m.len()), "{top}");
    }

    let req = CreateChatCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .messages(vec![user("Hi")])
        .max_completion_tokens(4u32)
        .logprobs(true)
        .top_logprobs(3u8)
        .build()
        .unwrap();
    let resp = client.chat().create(req).await.unwrap();
    let content = resp.choices[0].logprobs.clone().unwrap().content.unwrap();
    assert_eq!(
        content.len(),
        resp.usage.unwrap().completion_tokens as usize
    );
    for t in &content {
        assert!(t.logprob <= 0.0);
        assert_eq!(t.top_logprobs.len(), 3);
        assert!(t.bytes.is_some());
        // The top alternatives are sorted, most likely first.
        assert!(t.top_logprobs[0].logprob >= t.top_logprobs[2].logprob);
    }

    // Streamed chat chunks carry the logprobs of their tokens.
    let req = CreateChatCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .messages(vec![user("Hi")])
        .max_completion_tokens(4u32)
        .logprobs(true)
        .build()
        .unwrap();
    let mut stream = client.chat().create_stream(req).await.unwrap();
    let mut count = 0;
    while let Some(chunk) = stream.next().await {
        for c in chunk.unwrap().choices {
            if let Some(lp) = c.logprobs {
                count += lp.content.unwrap_or_default().len();
            }
        }
    }
    assert_eq!(count, 4);
}

#[tokio::test]
async fn echo_and_extensions_over_raw_http() {
    let s = TestServer::start(&[]);
    let (status, headers, body) = post_json(
        &s.url("/v1/completions"),
        &json!({"model": MODEL_NAME, "prompt": "Echo me", "echo": true, "max_tokens": 3,
                "top_k": 5, "min_p": 0.01, "repetition_penalty": 1.1, "ignore_eos": true,
                "user": "u-1", "an_unknown_field": [1, 2, 3]}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("x-request-id").is_some());
    assert!(
        body["choices"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Echo me")
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);

    // No model named: the served one.
    let (status, _, body) = post_json(
        &s.url("/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "max_tokens": 2}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], MODEL_NAME);
}

/// Every SSE event is whole UTF-8, no delta ends inside a character, and the deltas add up
/// to the unstreamed text of the same seed, for prompts in Urdu, Chinese and emoji.
#[tokio::test]
async fn streamed_multibyte_text_is_never_split() {
    let s = TestServer::start(&[]);
    let http = reqwest::Client::new();
    let prompts = [
        "اردو زبان بہت خوبصورت ہے",
        "我们今天去公园散步吧",
        "🎉🚀👍🏽 emoji 😀",
    ];
    let mut multibyte_chars = 0;
    let mut byte_tokens = 0;
    for (i, prompt) in prompts.iter().enumerate() {
        for seed in 0..4u64 {
            let body = json!({"model": MODEL_NAME, "prompt": prompt, "max_tokens": 64,
                              "temperature": 1.5, "seed": seed * 7 + i as u64, "ignore_eos": true,
                              "logprobs": 0});
            let whole: serde_json::Value = http
                .post(s.url("/v1/completions"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let want = whole["choices"][0]["text"].as_str().unwrap().to_string();
            byte_tokens += whole["choices"][0]["logprobs"]["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t.as_str().unwrap().starts_with("<0x"))
                .count();

            let mut streamed_body = body.clone();
            streamed_body["stream"] = json!(true);
            let resp = http
                .post(s.url("/v1/completions"))
                .json(&streamed_body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let raw = resp.bytes().await.unwrap();
            let mut text = String::new();
            for event in raw
                .split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"data:"))
            {
                let event = std::str::from_utf8(event).expect("every SSE line is valid UTF-8");
                let data = event.trim_start_matches("data:").trim();
                if data == "[DONE]" {
                    continue;
                }
                let chunk: serde_json::Value = serde_json::from_str(data).unwrap();
                let delta = chunk["choices"][0]["text"].as_str().unwrap_or("");
                assert!(
                    !delta.ends_with('\u{FFFD}') || want.contains('\u{FFFD}'),
                    "a delta ends in a split character: {delta:?}"
                );
                text.push_str(delta);
            }
            assert_eq!(text, want, "prompt {i} seed {seed}");
            multibyte_chars += want.chars().filter(|c| c.len_utf8() > 1).count();
        }
    }
    eprintln!("{multibyte_chars} multibyte characters, {byte_tokens} byte-fallback tokens");
    assert!(
        multibyte_chars > 0,
        "the test saw no multibyte output at all"
    );
    assert!(
        byte_tokens > 0,
        "no character was spelled in byte-fallback tokens"
    );

    // Chat in Urdu, parsed by the SDK.
    let req = CreateChatCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .messages(vec![user("آپ کیسے ہیں؟ 你好 👋")])
        .max_completion_tokens(32u32)
        .seed(1)
        .build()
        .unwrap();
    let mut stream = s.openai().chat().create_stream(req).await.unwrap();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    let _ = sse_data("");
}
