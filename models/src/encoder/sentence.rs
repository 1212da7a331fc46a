//! A sentence-transformers directory's pipeline: `modules.json` lists Transformer →
//! Pooling → (Normalize); `1_Pooling/config.json` says how tokens are pooled and
//! `sentence_bert_config.json` the longest input. Without `modules.json` a checkpoint is
//! served as vLLM serves a bare encoder: CLS pooling, normalized.

use super::pooling::Pooling;
use crate::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// Files a sentence-transformers checkpoint adds to a Hugging Face directory.
pub const SENTENCE_FILES: &[&str] = &[
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

#[derive(Debug, Clone, PartialEq)]
pub struct SentenceConfig {
    pub pooling: Pooling,
    pub normalize: bool,
    /// `max_seq_length`: inputs are limited to this many tokens (special tokens included).
    pub max_seq_length: Option<usize>,
    /// The text is lowercased before tokenizing.
    pub do_lower_case: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize, Default)]
struct PoolingFile {
    /// sentence-transformers 6 writes one mode by name; earlier versions one flag each.
    #[serde(default)]
    pooling_mode: Option<String>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
}

#[derive(Deserialize, Default)]
struct BertConfigFile {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::InvalidConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl SentenceConfig {
    /// The pipeline of the checkpoint in `dir`; the bare-encoder default without
    /// `modules.json`. Modules Indus does not run (Dense, ...) are an error, never skipped.
    pub fn read(dir: &Path) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(Self {
                pooling: Pooling::Cls,
                normalize: true,
                max_seq_length: None,
                do_lower_case: false,
            });
        }
        let modules: Vec<Module> = read_json(&modules_path)?;
        let mut pooling = None;
        let mut normalize = false;
        for m in &modules {
            match m.kind.rsplit('.').next().unwrap_or("") {
                "Transformer" => {}
                "Pooling" => {
                    let file: PoolingFile = read_json(&dir.join(&m.path).join("config.json"))?;
                    pooling =
                        Some(
                            pooling_mode(&file).map_err(|reason| ModelError::InvalidConfig {
                                path: dir.join(&m.path).join("config.json"),
                                reason,
                            })?,
                        );
                }
                "Normalize" => normalize = true,
                _ => {
                    return Err(ModelError::InvalidConfig {
                        path: modules_path.clone(),
                        reason: format!(
                            "module `{}` is not supported (Transformer, Pooling, Normalize are)",
                            m.kind
                        ),
                    });
                }
            }
        }
        let bert_path = dir.join("sentence_bert_config.json");
        let bert: BertConfigFile = if bert_path.is_file() {
            read_json(&bert_path)?
        } else {
            BertConfigFile::default()
        };
        // sentence-transformers 6 keeps the limit as the tokenizer's model_max_length.
        let max_seq_length = bert.max_seq_length.or_else(|| tokenizer_max_length(dir));
        Ok(Self {
            pooling: pooling.unwrap_or(Pooling::Cls),
            normalize,
            max_seq_length,
            do_lower_case: bert.do_lower_case,
        })
    }
}

/// `model_max_length` of tokenizer_config.json, unless it is transformers' "no limit"
/// sentinel (a huge number).
fn tokenizer_max_length(dir: &Path) -> Option<usize> {
    #[derive(Deserialize)]
    struct TokenizerConfig {
        model_max_length: Option<f64>,
    }
    let path = dir.join("tokenizer_config.json");
    let cfg: TokenizerConfig = read_json(&path).ok()?;
    cfg.model_max_length
        .filter(|n| (1.0..1e9).contains(n))
        .map(|n| n as usize)
}

fn pooling_mode(f: &PoolingFile) -> std::result::Result<Pooling, String> {
    if let Some(mode) = f.pooling_mode.as_deref() {
        return match mode {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            "max" => Ok(Pooling::Max),
            "mean_sqrt_len_tokens" => Ok(Pooling::MeanSqrtLen),
            "lasttoken" => Ok(Pooling::LastToken),
            other => Err(format!("pooling mode `{other}` is not supported")),
        };
    }
    if f.pooling_mode_weightedmean_tokens {
        return Err("weighted-mean pooling is not supported".into());
    }
    let modes = [
        (f.pooling_mode_cls_token, Pooling::Cls),
        (f.pooling_mode_mean_tokens, Pooling::Mean),
        (f.pooling_mode_max_tokens, Pooling::Max),
        (f.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
        (f.pooling_mode_lasttoken, Pooling::LastToken),
    ];
    let on: Vec<Pooling> = modes.iter().filter(|m| m.0).map(|m| m.1).collect();
    match on.as_slice() {
        [one] => Ok(*one),
        [] => Err("no pooling mode is set".into()),
        _ => Err("more than one pooling mode (concatenated pooling) is not supported".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("indus-st-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_the_minilm_pipeline() {
        let d = temp_dir("minilm");
        write(
            &d,
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        write(
            &d,
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension":384,"pooling_mode_mean_tokens":true}"#,
        );
        write(
            &d,
            "sentence_bert_config.json",
            r#"{"max_seq_length":256,"do_lower_case":false}"#,
        );
        let c = SentenceConfig::read(&d).unwrap();
        assert_eq!(
            c,
            SentenceConfig {
                pooling: Pooling::Mean,
                normalize: true,
                max_seq_length: Some(256),
                do_lower_case: false
            }
        );
    }

    #[test]
    fn unknown_modules_and_modes_are_errors() {
        let d = temp_dir("dense");
        write(
            &d,
            "modules.json",
            r#"[{"path":"","type":"sentence_transformers.models.Transformer"},
            {"path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
        );
        let e = SentenceConfig::read(&d).unwrap_err().to_string();
        assert!(e.contains("Dense"), "{e}");
        let d = temp_dir("two");
        write(
            &d,
            "modules.json",
            r#"[{"path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        );
        write(
            &d,
            "1_Pooling/config.json",
            r#"{"pooling_mode_mean_tokens":true,"pooling_mode_cls_token":true}"#,
        );
        let e = SentenceConfig::read(&d).unwrap_err().to_string();
        assert!(e.contains("more than one"), "{e}");
    }

    #[test]
    fn reads_the_sentence_transformers_6_format() {
        let d = temp_dir("st6");
        write(
            &d,
            "modules.json",
            r#"[{"path":"","type":"sentence_transformers.base.modules.transformer.Transformer"},
            {"path":"1_Pooling","type":"sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
            {"path":"2_Normalize","type":"sentence_transformers.base.modules.normalize.Normalize"}]"#,
        );
        write(
            &d,
            "1_Pooling/config.json",
            r#"{"embedding_dimension":32,"pooling_mode":"mean"}"#,
        );
        write(
            &d,
            "sentence_bert_config.json",
            r#"{"transformer_task":"feature-extraction"}"#,
        );
        write(&d, "tokenizer_config.json", r#"{"model_max_length":48}"#);
        let c = SentenceConfig::read(&d).unwrap();
        assert_eq!(
            (c.pooling, c.normalize, c.max_seq_length),
            (Pooling::Mean, true, Some(48))
        );
        write(
            &d,
            "tokenizer_config.json",
            r#"{"model_max_length":1000000000000000019884624838656}"#,
        );
        assert_eq!(SentenceConfig::read(&d).unwrap().max_seq_length, None);
    }

    #[test]
    fn a_bare_encoder_gets_normalized_cls() {
        let d = temp_dir("bare");
        let c = SentenceConfig::read(&d).unwrap();
        assert_eq!((c.pooling, c.normalize), (Pooling::Cls, true));
    }
}
