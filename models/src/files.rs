//! Where a model's files are: a local directory, or a Hugging Face hub id resolved through
//! hf-hub (HF_HOME cache, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE honoured).

use crate::{ModelError, Result};
use std::path::{Path, PathBuf};

/// What the user named with `--model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Local(PathBuf),
    Hub { repo_id: String, revision: String },
}

impl ModelSource {
    /// A path that exists is local; anything else that looks like `owner/name` is a hub id.
    pub fn parse(name: &str, revision: Option<&str>) -> Self {
        let path = Path::new(name);
        if path.exists()
            || name.starts_with('.')
            || name.starts_with('/')
            || name.matches('/').count() != 1
        {
            ModelSource::Local(path.to_path_buf())
        } else {
            ModelSource::Hub {
                repo_id: name.to_string(),
                revision: revision.unwrap_or("main").to_string(),
            }
        }
    }
}

/// The files of one checkpoint, all on local disk: a Hugging Face directory (config,
/// safetensors, tokenizer) or one GGUF file, which carries all three.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Name to show users (the directory, the file or the hub id).
    pub name: String,
    /// `config.json`; `None` for a GGUF checkpoint.
    pub config: Option<PathBuf>,
    /// Safetensors shards; empty when only `--load-format dummy` will be used, or for GGUF.
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`; `None` for a GGUF checkpoint (its tokenizer is in the file).
    pub tokenizer: Option<PathBuf>,
    pub tokenizer_config: Option<PathBuf>,
    pub generation_config: Option<PathBuf>,
    /// The `.gguf` file, when the checkpoint is one.
    pub gguf: Option<PathBuf>,
}

/// Fetches one file of a hub repo: `Ok(None)` when the repo does not have it.
type FileGetter = Box<dyn Fn(&str) -> Result<Option<PathBuf>>>;

const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

impl ModelFiles {
    /// Finds (downloading if needed) everything a model needs. With `need_weights = false`
    /// (dummy weights) only the config and tokenizer are fetched.
    pub fn resolve(source: &ModelSource, need_weights: bool) -> Result<Self> {
        Self::resolve_with(source, need_weights, None)
    }

    /// As [`Self::resolve`]; `gguf_file` picks one `.gguf` file of a directory or hub repo
    /// (`--gguf-file`). A path to a `.gguf` file, or a directory holding exactly one `.gguf`
    /// and no safetensors, is a GGUF checkpoint without it.
    pub fn resolve_with(
        source: &ModelSource,
        need_weights: bool,
        gguf_file: Option<&str>,
    ) -> Result<Self> {
        match source {
            ModelSource::Local(path) => match gguf_file {
                Some(f) => Self::from_gguf(&path.join(f)),
                None if path.is_file() => Self::from_gguf(path),
                None => match lone_gguf(path)? {
                    Some(f) => Self::from_gguf(&f),
                    None => Self::from_dir(path, need_weights),
                },
            },
            ModelSource::Hub { repo_id, revision } => {
                Self::from_hub(repo_id, revision, need_weights, gguf_file)
            }
        }
    }

    /// A GGUF checkpoint: the one file.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile(path.to_path_buf()));
        }
        Ok(Self {
            name: path.display().to_string(),
            config: None,
            weights: Vec::new(),
            tokenizer: None,
            tokenizer_config: None,
            generation_config: None,
            gguf: Some(path.to_path_buf()),
        })
    }

    pub fn from_dir(dir: &Path, need_weights: bool) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile(dir.to_path_buf()));
        }
        let require = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(ModelError::MissingFile(p))
            }
        };
        let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let weights = if !need_weights {
            Vec::new()
        } else if let Some(index) = optional(INDEX) {
            shard_names(&index)?
                .into_iter()
                .map(|n| require(&n))
                .collect::<Result<Vec<_>>>()?
        } else if let Some(single) = optional(SINGLE) {
            vec![single]
        } else {
            return Err(ModelError::NoWeights {
                model: dir.display().to_string(),
                dir: dir.to_path_buf(),
            });
        };
        Ok(Self {
            name: dir.display().to_string(),
            config: Some(require("config.json")?),
            weights,
            // Optional here: `--tokenizer` may supply it (config-only directories).
            tokenizer: optional("tokenizer.json"),
            tokenizer_config: optional("tokenizer_config.json"),
            generation_config: optional("generation_config.json"),
            gguf: None,
        })
    }

    fn from_hub(
        repo_id: &str,
        revision: &str,
        need_weights: bool,
        gguf_file: Option<&str>,
    ) -> Result<Self> {
        let hub_err = |reason: String| ModelError::Hub {
            model: repo_id.to_string(),
            reason,
        };
        let repo = hf_hub::Repo::with_revision(
            repo_id.to_string(),
            hf_hub::RepoType::Model,
            revision.to_string(),
        );
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
            .unwrap_or(false);
        // One getter for both modes: the cache only when offline, else the API (which
        // itself serves cached files without a request body).
        let get: FileGetter = if offline {
            let cache = hf_hub::Cache::from_env().repo(repo);
            Box::new(move |f: &str| Ok(cache.get(f)))
        } else {
            let token = std::env::var("HF_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .or_else(|| hf_hub::Cache::from_env().token());
            let api = hf_hub::api::sync::ApiBuilder::from_env()
                .with_token(token)
                .with_progress(true)
                .build()
                .map_err(|e| hub_err(e.to_string()))?
                .repo(repo);
            Box::new(move |f: &str| match api.get(f) {
                Ok(p) => Ok(Some(p)),
                Err(hf_hub::api::sync::ApiError::RequestError(e))
                    if matches!(*e, ureq::Error::Status(404, _)) =>
                {
                    Ok(None)
                }
                Err(e) => Err(ModelError::Hub {
                    model: f.to_string(),
                    reason: e.to_string(),
                }),
            })
        };
        let require = |f: &str| -> Result<PathBuf> {
            get(f)?.ok_or_else(|| {
                if offline {
                    ModelError::OfflineMiss {
                        model: format!("{repo_id}/{f}"),
                    }
                } else {
                    ModelError::MissingFile(PathBuf::from(format!("{repo_id}/{f}")))
                }
            })
        };
        if let Some(f) = gguf_file {
            // A GGUF repo holds many quantizations: fetch just the one asked for.
            let mut files = Self::from_gguf(&require(f)?)?;
            files.name = format!("{repo_id}/{f}");
            return Ok(files);
        }
        let config = require("config.json")?;
        let tokenizer = require("tokenizer.json")?;
        if std::fs::read_to_string(&config)
            .is_ok_and(|t| crate::encoder::EncoderConfig::is_encoder_config(&t))
        {
            // A sentence-transformers repo's pipeline files land beside config.json in
            // the same snapshot, where the encoder loader reads them; each is optional.
            for f in crate::encoder::SENTENCE_FILES {
                get(f)?;
            }
        }
        let weights = if !need_weights {
            Vec::new()
        } else if let Some(index) = get(INDEX)? {
            shard_names(&index)?
                .iter()
                .map(|n| require(n))
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![get(SINGLE)?.ok_or_else(|| ModelError::NoWeights {
                model: repo_id.to_string(),
                dir: PathBuf::from(repo_id),
            })?]
        };
        Ok(Self {
            name: repo_id.to_string(),
            config: Some(config),
            weights,
            tokenizer: Some(tokenizer),
            tokenizer_config: get("tokenizer_config.json")?,
            generation_config: get("generation_config.json")?,
            gguf: None,
        })
    }
}

/// The one `.gguf` file of a directory without safetensors weights; several is an error
/// asking for `--gguf-file`.
fn lone_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.is_dir() || dir.join(SINGLE).is_file() || dir.join(INDEX).is_file() {
        return Ok(None);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(ModelError::InvalidConfig {
            path: dir.to_path_buf(),
            reason: format!(
                "holds {} .gguf files ({}); pick one with --gguf-file",
                found.len(),
                found
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// The distinct shard file names of a sharded checkpoint's index, in a stable order.
fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::InvalidConfig {
            path: index.to_path_buf(),
            reason: e.to_string(),
        })?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::InvalidConfig {
            path: index.to_path_buf(),
            reason: "no weight_map".into(),
        })?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            ModelSource::parse("meta-llama/Llama-3.2-1B", None),
            ModelSource::Hub {
                repo_id: "meta-llama/Llama-3.2-1B".into(),
                revision: "main".into()
            }
        );
        assert!(matches!(
            ModelSource::parse("/models/x", None),
            ModelSource::Local(_)
        ));
        assert!(matches!(
            ModelSource::parse("./x/y", None),
            ModelSource::Local(_)
        ));
    }

    #[test]
    fn missing_dir_is_a_clear_error() {
        let err = ModelFiles::from_dir(Path::new("/nonexistent/model"), true).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/model"));
    }

    #[test]
    fn sharded_index_lists_each_shard_once() {
        let dir = std::env::temp_dir().join(format!("indus-shards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let index = dir.join(INDEX);
        std::fs::write(
            &index,
            r#"{"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            shard_names(&index).unwrap(),
            vec![
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
