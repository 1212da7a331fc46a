//! Benchmark datasets: `random` (lengths around a mean, token-id or text prompts),
//! `sharegpt` (a local ShareGPT JSON file) and `prefix` (a shared prefix plus a random suffix,
//! for prefix caching). All are drawn from one seeded RNG, so a seed gives the same prompts.

use anyhow::{Context, bail};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    Random,
    Sharegpt,
    Prefix,
}

/// Which prompts to send.
#[derive(Debug, Clone, clap::Args)]
pub struct DatasetArgs {
    /// random | sharegpt | prefix.
    #[arg(long, value_enum, default_value = "random")]
    pub dataset_name: DatasetKind,
    /// ShareGPT JSON file (for --dataset-name sharegpt).
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    /// Mean prompt length in tokens (random; the suffix length for prefix).
    #[arg(long, alias = "random-input-len", default_value_t = 1024)]
    pub input_len: usize,
    /// Mean output length in tokens (random, prefix).
    #[arg(long, alias = "random-output-len", default_value_t = 128)]
    pub output_len: usize,
    /// Lengths are drawn uniformly from [len·(1−r), len·(1+r)].
    #[arg(long, alias = "random-range-ratio", default_value_t = 0.0)]
    pub range_ratio: f64,
    /// Shared prefix length in tokens (prefix).
    #[arg(long, default_value_t = 256)]
    pub prefix_len: usize,
    /// Number of distinct shared prefixes, used round-robin (prefix).
    #[arg(long, default_value_t = 1)]
    pub num_prefixes: usize,
    /// Fixed output length for ShareGPT instead of the reference answer's length.
    #[arg(long)]
    pub sharegpt_output_len: Option<usize>,
    /// tokenizer.json of the served model: text prompts of exact token lengths, and ShareGPT
    /// lengths counted in tokens (else about 4 characters a token).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Token ids of random prompts are drawn from [0, vocab-size) (without --tokenizer).
    #[arg(long, default_value_t = 32000)]
    pub vocab_size: u32,
    /// Send random/prefix prompts as text, not token ids (always so for chat endpoints).
    /// Without --tokenizer the text is common English words, about one token each.
    #[arg(long)]
    pub text_prompts: bool,
}

impl Default for DatasetArgs {
    fn default() -> Self {
        Self {
            dataset_name: DatasetKind::Random,
            dataset_path: None,
            input_len: 1024,
            output_len: 128,
            range_ratio: 0.0,
            prefix_len: 256,
            num_prefixes: 1,
            sharegpt_output_len: None,
            tokenizer: None,
            vocab_size: 32000,
            text_prompts: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

impl Prompt {
    fn concat(self, other: Prompt) -> Prompt {
        match (self, other) {
            (Prompt::Tokens(mut a), Prompt::Tokens(b)) => {
                a.extend(b);
                Prompt::Tokens(a)
            }
            (Prompt::Text(a), Prompt::Text(b)) => Prompt::Text(a + &b),
            _ => unreachable!("prompts of one dataset are all text or all tokens"),
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Prompt::Text(s) => Some(s),
            Prompt::Tokens(_) => None,
        }
    }
}

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    pub prompt: Prompt,
    /// Prompt length in tokens (exact for token ids or with a tokenizer, else an estimate).
    pub prompt_len: usize,
    pub output_len: usize,
}

const WORDS: &[&str] = &[
    " the", " of", " and", " to", " in", " is", " that", " for", " it", " as", " was", " with",
    " be", " by", " on", " not", " he", " this", " are", " or", " his", " from", " at", " which",
    " but", " have", " an", " had", " they", " you", " were", " their", " one", " all", " we",
    " can", " her", " has", " there", " been", " if", " more", " when", " will", " would", " who",
    " so", " no", " time", " water", " house", " river", " light", " city", " world", " day",
    " book", " tree", " road", " music", " table", " stone", " market", " garden", " school",
];

/// Makes prompts of a given token length.
struct PromptMaker {
    tokenizer: Option<tokenizers::Tokenizer>,
    vocab: u32,
    text: bool,
}

impl PromptMaker {
    fn new(args: &DatasetArgs, text: bool) -> anyhow::Result<Self> {
        let tokenizer = match &args.tokenizer {
            Some(p) => Some(
                tokenizers::Tokenizer::from_file(p)
                    .map_err(|e| anyhow::anyhow!("cannot load tokenizer {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let vocab = match &tokenizer {
            Some(t) => t.get_vocab_size(false) as u32,
            None => args.vocab_size,
        };
        if vocab == 0 {
            bail!("--vocab-size must be positive");
        }
        Ok(Self {
            tokenizer,
            vocab,
            text,
        })
    }

    fn random_ids(&self, rng: &mut ChaCha8Rng, len: usize) -> Vec<u32> {
        (0..len).map(|_| rng.random_range(0..self.vocab)).collect()
    }

    /// Number of tokens in `text`: exact with a tokenizer, else about 4 characters a token.
    fn count(&self, text: &str) -> usize {
        match &self.tokenizer {
            Some(t) => t.encode(text, false).map(|e| e.len()).unwrap_or(0),
            None => text.chars().count().div_ceil(4),
        }
    }

    fn make(&self, rng: &mut ChaCha8Rng, len: usize) -> anyhow::Result<(Prompt, usize)> {
        if !self.text {
            return Ok((Prompt::Tokens(self.random_ids(rng, len)), len));
        }
        let Some(tok) = &self.tokenizer else {
            let text: String = (0..len)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect();
            return Ok((Prompt::Text(text), len));
        };
        // Random ids → text → ids, cut to the length (re-encoding merges or splits some).
        let mut ids = self.random_ids(rng, len + len / 2 + 8);
        for _ in 0..4 {
            let text = tok
                .decode(&ids, true)
                .map_err(|e| anyhow::anyhow!("decode: {e}"))?;
            let enc = tok
                .encode(text.as_str(), false)
                .map_err(|e| anyhow::anyhow!("encode: {e}"))?;
            let got = enc.get_ids();
            if got.len() >= len {
                let cut = &got[..len];
                let text = tok
                    .decode(cut, true)
                    .map_err(|e| anyhow::anyhow!("decode: {e}"))?;
                let n = self.count(&text);
                return Ok((Prompt::Text(text), n));
            }
            ids.extend(self.random_ids(rng, len - got.len() + 8));
        }
        bail!("cannot make a {len}-token text prompt with this tokenizer")
    }
}

fn sample_len(rng: &mut ChaCha8Rng, mean: usize, ratio: f64) -> usize {
    if ratio <= 0.0 {
        return mean.max(1);
    }
    let lo = ((mean as f64) * (1.0 - ratio)).floor().max(1.0) as usize;
    let hi = ((mean as f64) * (1.0 + ratio)).ceil().max(lo as f64) as usize;
    rng.random_range(lo..=hi)
}

/// Builds `n` requests. `force_text` is set for chat endpoints (which take no token ids).
pub fn build(
    args: &DatasetArgs,
    n: usize,
    seed: u64,
    force_text: bool,
) -> anyhow::Result<Vec<SampleRequest>> {
    if !(0.0..1.0).contains(&args.range_ratio) {
        bail!("--range-ratio must be in [0, 1)");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let text = force_text || args.text_prompts;
    match args.dataset_name {
        DatasetKind::Random => {
            let maker = PromptMaker::new(args, text)?;
            (0..n)
                .map(|_| {
                    let input = sample_len(&mut rng, args.input_len, args.range_ratio);
                    let output = sample_len(&mut rng, args.output_len, args.range_ratio);
                    let (prompt, prompt_len) = maker.make(&mut rng, input)?;
                    Ok(SampleRequest {
                        prompt,
                        prompt_len,
                        output_len: output,
                    })
                })
                .collect()
        }
        DatasetKind::Prefix => {
            let maker = PromptMaker::new(args, text)?;
            let prefixes = (0..args.num_prefixes.max(1))
                .map(|_| maker.make(&mut rng, args.prefix_len))
                .collect::<anyhow::Result<Vec<_>>>()?;
            (0..n)
                .map(|i| {
                    let (prefix, prefix_len) = prefixes[i % prefixes.len()].clone();
                    let input = sample_len(&mut rng, args.input_len, args.range_ratio);
                    let output = sample_len(&mut rng, args.output_len, args.range_ratio);
                    let (suffix, suffix_len) = maker.make(&mut rng, input)?;
                    Ok(SampleRequest {
                        prompt: prefix.concat(suffix),
                        prompt_len: prefix_len + suffix_len,
                        output_len: output,
                    })
                })
                .collect()
        }
        DatasetKind::Sharegpt => {
            let path = args
                .dataset_path
                .as_ref()
                .context("--dataset-name sharegpt needs --dataset-path FILE.json")?;
            let maker = PromptMaker::new(args, true)?;
            sharegpt(path, &maker, args.sharegpt_output_len, n, &mut rng)
        }
    }
}

fn sharegpt(
    path: &std::path::Path,
    maker: &PromptMaker,
    fixed_output: Option<usize>,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<Vec<SampleRequest>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let data: Vec<serde_json::Value> = serde_json::from_slice(&raw)
        .with_context(|| format!("{} is not a JSON array", path.display()))?;
    let turn_text = |t: &serde_json::Value| {
        t.get("value")
            .or_else(|| t.get("content"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let mut convs: Vec<(String, String)> = data
        .iter()
        .filter_map(|e| {
            let turns = e
                .get("conversations")
                .or_else(|| e.get("conversation"))?
                .as_array()?;
            if turns.len() < 2 {
                return None;
            }
            Some((turn_text(&turns[0])?, turn_text(&turns[1])?))
        })
        .collect();
    convs.shuffle(rng);
    let mut out = Vec::with_capacity(n);
    for (prompt, completion) in convs {
        if out.len() == n {
            break;
        }
        let prompt_len = maker.count(&prompt);
        let output_len = fixed_output.unwrap_or_else(|| maker.count(&completion));
        // The filter of vLLM's benchmark: not too short, not too long.
        if prompt_len < 4 || (fixed_output.is_none() && output_len < 4) {
            continue;
        }
        if prompt_len > 1024 || prompt_len + output_len > 2048 {
            continue;
        }
        out.push(SampleRequest {
            prompt: Prompt::Text(prompt),
            prompt_len,
            output_len: output_len.max(1),
        });
    }
    if out.is_empty() {
        bail!("{} has no usable conversations", path.display());
    }
    // Too few conversations: repeat them in order.
    let have = out.len();
    for i in have..n {
        out.push(out[i % have].clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_seeded_and_in_range() {
        let args = DatasetArgs {
            input_len: 100,
            output_len: 20,
            range_ratio: 0.5,
            vocab_size: 1000,
            ..Default::default()
        };
        let a = build(&args, 50, 7, false).unwrap();
        assert_eq!(a, build(&args, 50, 7, false).unwrap());
        assert_ne!(a, build(&args, 50, 8, false).unwrap());
        for r in &a {
            assert!((50..=150).contains(&r.prompt_len));
            assert!((10..=30).contains(&r.output_len));
            let Prompt::Tokens(ids) = &r.prompt else {
                panic!()
            };
            assert_eq!(ids.len(), r.prompt_len);
            assert!(ids.iter().all(|&t| t < 1000));
        }
    }

    #[test]
    fn prefix_shares_the_prefix() {
        let args = DatasetArgs {
            dataset_name: DatasetKind::Prefix,
            input_len: 10,
            output_len: 5,
            prefix_len: 32,
            num_prefixes: 2,
            ..Default::default()
        };
        let r = build(&args, 4, 1, false).unwrap();
        let ids = |i: usize| match &r[i].prompt {
            Prompt::Tokens(t) => t.clone(),
            _ => panic!(),
        };
        assert_eq!(ids(0)[..32], ids(2)[..32]);
        assert_ne!(ids(0)[..32], ids(1)[..32]);
        assert_ne!(ids(0)[32..], ids(2)[32..]);
        assert_eq!(r[0].prompt_len, 42);
    }

    #[test]
    fn sharegpt_takes_first_turns_filters_and_repeats() {
        let dir = std::env::temp_dir().join(format!("indus-sharegpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sg.json");
        let long = "word ".repeat(40);
        let data = serde_json::json!([
            {"id": "a", "conversations": [
                {"from": "human", "value": long.clone()},
                {"from": "gpt", "value": "answer ".repeat(20)}]},
            {"id": "short", "conversations": [
                {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there friend"}]},
            {"id": "one-turn", "conversations": [{"from": "human", "value": long.clone()}]},
            {"id": "b", "conversation": [
                {"role": "user", "content": long.clone()},
                {"role": "assistant", "content": "reply ".repeat(10)}]}
        ]);
        std::fs::write(&path, data.to_string()).unwrap();
        let args = DatasetArgs {
            dataset_name: DatasetKind::Sharegpt,
            dataset_path: Some(path.clone()),
            ..Default::default()
        };
        let r = build(&args, 5, 0, false).unwrap();
        assert_eq!(r.len(), 5);
        assert!(r.iter().all(|x| x.prompt.as_text() == Some(long.as_str())));
        // About 4 characters a token without a tokenizer: 200 chars → 50 tokens.
        assert!(r.iter().all(|x| x.prompt_len == 50));
        let mut outs: Vec<usize> = r.iter().map(|x| x.output_len).collect();
        outs.sort();
        outs.dedup();
        assert_eq!(outs, vec![15, 35]);
        let fixed = DatasetArgs {
            sharegpt_output_len: Some(7),
            ..args
        };
        assert!(
            build(&fixed, 2, 0, false)
                .unwrap()
                .iter()
                .all(|x| x.output_len == 7)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn text_without_tokenizer_has_one_word_per_token() {
        let args = DatasetArgs {
            input_len: 12,
            ..Default::default()
        };
        let r = build(&args, 1, 1, true).unwrap();
        let text = r[0].prompt.as_text().unwrap();
        assert_eq!(text.split_whitespace().count(), 12);
    }
}
