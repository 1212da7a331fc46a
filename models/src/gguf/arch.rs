//! What a GGUF file's metadata says about the model: the config our decoder is built from, and
//! the mapping from our (Hugging Face) tensor names to GGUF's: whole-model names here, each
//! architecture's per-layer table beside its layer ([`crate::llama`], [`crate::gemma`]).

use super::reader::{GgufError, GgufFile};
use crate::config::{Architecture, GemmaOptions, ModelConfig, MoeOptions, RopeScaling};
use crate::{ModelError, Result};

/// Whole-model names.
const MODEL_NAMES: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// Per-layer names: (our suffix after `model.layers.N.`, GGUF suffix after `blk.N.`).
pub type LayerNames = &'static [(&'static str, &'static str)];

/// The per-layer name table of an architecture's GGUF files.
pub fn layer_names(architecture: Architecture) -> LayerNames {
    if architecture.is_gemma() {
        crate::gemma::GGUF_LAYER_NAMES
    } else {
        crate::llama::GGUF_LAYER_NAMES
    }
}

/// The GGUF name of one of our tensor names, per-layer names through `layers`.
pub fn gguf_name(layers: LayerNames, ours: &str) -> Option<String> {
    if let Some((_, g)) = MODEL_NAMES.iter().find(|(o, _)| *o == ours) {
        return Some((*g).to_string());
    }
    let rest = ours.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, g) = layers.iter().find(|(o, _)| *o == suffix)?;
    Some(format!("blk.{layer}.{g}"))
}

/// How a family's converter laid out Q and K rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkLayout {
    /// llama.cpp's converter permutes llama/mistral Q and K rows for its interleaved rotary;
    /// they are un-permuted at load.
    Interleaved,
    /// Stored as in the Hugging Face checkpoint (qwen2: neox rotary in llama.cpp too).
    AsIs,
}

/// The family named by `general.architecture`.
pub fn architecture(file: &GgufFile) -> Result<(Architecture, QkLayout, String)> {
    let arch = file
        .str("general.architecture")
        .map_err(gguf_err)?
        .to_string();
    let (a, layout) = match arch.as_str() {
        "llama" => (Architecture::Llama, QkLayout::Interleaved),
        "mistral" => (Architecture::Mistral, QkLayout::Interleaved),
        "qwen2" => (Architecture::Qwen2, QkLayout::AsIs),
        "qwen3" => (Architecture::Qwen3, QkLayout::AsIs),
        "qwen2moe" => (Architecture::Qwen2Moe, QkLayout::AsIs),
        "qwen3moe" => (Architecture::Qwen3Moe, QkLayout::AsIs),
        "gemma2" => (Architecture::Gemma2, QkLayout::AsIs),
        "gemma3" => (Architecture::Gemma3, QkLayout::AsIs),
        other => {
            return Err(ModelError::UnsupportedArchitecture(vec![format!(
                "{} (general.architecture = {other}; GGUF supports llama (Mixtral included), \
                 mistral, qwen2, qwen3, qwen2moe, qwen3moe, gemma2, gemma3)",
                file.path().display()
            )]));
        }
    };
    // llama.cpp writes Mixtral as `llama` with experts.
    let a = match a {
        Architecture::Llama if expert_count(file, &arch)? > 0 => Architecture::Mixtral,
        a => a,
    };
    Ok((a, layout, arch))
}

fn expert_count(file: &GgufFile, arch: &str) -> Result<usize> {
    Ok(file
        .opt_usize(&format!("{arch}.expert_count"))
        .map_err(gguf_err)?
        .unwrap_or(0))
}

pub(crate) fn gguf_err(e: GgufError) -> ModelError {
    ModelError::Gguf(e)
}

/// The decoder's config from the file's metadata (and a few tensor shapes).
pub fn config_from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let (architecture, _, arch) = architecture(file)?;
    let key = |k: &str| format!("{arch}.{k}");
    let need = |k: &str| file.usize(&key(k)).map_err(gguf_err);
    let invalid = |reason: String| {
        ModelError::Gguf(GgufError::Invalid {
            path: file.path().to_path_buf(),
            reason,
        })
    };
    let hidden_size = need("embedding_length")?;
    let num_layers = need("block_count")?;
    let intermediate_size = need("feed_forward_length")?;
    let num_heads = need("attention.head_count")?;
    let num_kv_heads = file
        .opt_usize(&key("attention.head_count_kv"))
        .map_err(gguf_err)?
        .unwrap_or(num_heads);
    if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
        return Err(invalid(format!(
            "{num_heads} attention heads are not a multiple of {num_kv_heads} KV heads"
        )));
    }
    let head_dim = match file
        .opt_usize(&key("attention.key_length"))
        .map_err(gguf_err)?
    {
        Some(d) => d,
        None if hidden_size.is_multiple_of(num_heads) => hidden_size / num_heads,
        None => {
            return Err(invalid(
                "embedding_length is not a multiple of head_count".into(),
            ));
        }
    };
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(invalid(format!("head size {head_dim} must be even")));
    }
    let rms_norm_eps = file
        .opt_f64(&key("attention.layer_norm_rms_epsilon"))
        .map_err(gguf_err)?
        .ok_or_else(|| {
            gguf_err(GgufError::MissingKey {
                path: file.path().to_path_buf(),
                key: key("attention.layer_norm_rms_epsilon"),
            })
        })?;
    let rope_theta = file
        .opt_f64(&key("rope.freq_base"))
        .map_err(gguf_err)?
        .unwrap_or(10_000.0);
    let max_position_embeddings = need("context_length")?;
    let rope_scaling = match file.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
        None | Some("none") => None,
        Some("linear") => Some(RopeScaling {
            rope_type: "linear".into(),
            factor: file
                .opt_f64(&key("rope.scaling.factor"))
                .map_err(gguf_err)?,
            ..Default::default()
        }),
        Some(other) => {
            return Err(invalid(format!(
                "{}: rope scaling `{other}` is not supported (linear; llama3 comes as rope_freqs)",
                key("rope.scaling.type")
            )));
        }
    };
    // Llama 3.1-style scaling arrives as per-frequency divisors, one per rotary pair.
    let rope_freq_factors = match file.tensor_info("rope_freqs.weight") {
        None => None,
        Some(info) => {
            if info.elem_count() != head_dim / 2 {
                return Err(invalid(format!(
                    "rope_freqs.weight has {} values, the head size {head_dim} needs {}",
                    info.elem_count(),
                    head_dim / 2
                )));
            }
            let t = super::weights::qtensor(
                file,
                "rope_freqs.weight",
                info,
                &candle_core::Device::Cpu,
            )?
            .dequantize(&candle_core::Device::Cpu)?
            .flatten_all()?;
            Some(t.to_vec1::<f32>()?)
        }
    };
    let embed = file
        .tensor_info("token_embd.weight")
        .ok_or_else(|| invalid("no tensor `token_embd.weight`".into()))?;
    let vocab_size = embed.shape.first().copied().unwrap_or(0);
    if embed.shape != [vocab_size, hidden_size] {
        return Err(invalid(format!(
            "token_embd.weight has shape {:?}, expected [vocab, {hidden_size}]",
            embed.shape
        )));
    }
    let id = |k: &str| -> Result<Option<u32>> {
        Ok(file
            .opt_usize(k)
            .map_err(gguf_err)?
            .and_then(|v| u32::try_from(v).ok()))
    };
    let sliding_window = match architecture {
        Architecture::Mistral => file
            .opt_usize(&key("attention.sliding_window"))
            .map_err(gguf_err)?,
        _ => None,
    };
    Ok(ModelConfig {
        architecture,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        rope_scaling,
        rope_freq_factors,
        max_position_embeddings,
        original_max_position_embeddings: None,
        rotary_dim: head_dim,
        fused_checkpoint_projections: false,
        tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        qkv_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
        sliding_window,
        bos_token_id: id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
        gemma: match architecture {
            Architecture::Gemma2 => Some(gemma2_options(
                file,
                &key,
                num_layers,
                head_dim,
                hidden_size / num_heads,
            )?),
            Architecture::Gemma3 => Some(gemma3_options(file, &key, num_layers, head_dim)?),
            _ => None,
        },
        moe: moe_options(file, &arch, architecture, num_layers, intermediate_size)?,
    })
}

/// The experts of a `llama` (Mixtral), `qwen2moe` or `qwen3moe` file. Which layers are sparse
/// comes from the tensors (a layer with a router, `ffn_gate_inp`), so Qwen's dense
/// `mlp_only_layers` load too. The top-k weights are renormalized as llama.cpp does per
/// family (Mixtral and Qwen3-MoE yes, Qwen2-MoE no) unless `expert_weights_norm` says.
fn moe_options(
    file: &GgufFile,
    arch: &str,
    architecture: Architecture,
    num_layers: usize,
    intermediate_size: usize,
) -> Result<Option<MoeOptions>> {
    let num_experts = expert_count(file, arch)?;
    if num_experts == 0 {
        return Ok(None);
    }
    let key = |k: &str| format!("{arch}.{k}");
    let invalid = |reason: String| {
        ModelError::Gguf(GgufError::Invalid {
            path: file.path().to_path_buf(),
            reason,
        })
    };
    let missing = |k: &str| {
        gguf_err(GgufError::MissingKey {
            path: file.path().to_path_buf(),
            key: key(k),
        })
    };
    let top_k = file
        .opt_usize(&key("expert_used_count"))
        .map_err(gguf_err)?
        .ok_or_else(|| missing("expert_used_count"))?;
    if top_k == 0 || top_k > num_experts {
        return Err(invalid(format!(
            "{} = {top_k} must be between 1 and the {num_experts} experts",
            key("expert_used_count")
        )));
    }
    let expert_intermediate = match architecture {
        Architecture::Mixtral => intermediate_size,
        _ => file
            .opt_usize(&key("expert_feed_forward_length"))
            .map_err(gguf_err)?
            .ok_or_else(|| missing("expert_feed_forward_length"))?,
    };
    let renormalize = match file
        .get(&key("expert_weights_norm"))
        .and_then(|v| v.as_bool())
    {
        Some(b) => b,
        None => architecture != Architecture::Qwen2Moe,
    };
    let shared_expert_intermediate = match file.tensor_info("blk.0.ffn_gate_shexp.weight") {
        None => None,
        Some(info) => Some(
            match file
                .opt_usize(&key("expert_shared_feed_forward_length"))
                .map_err(gguf_err)?
            {
                Some(n) => n,
                None => info.shape.first().copied().unwrap_or(0),
            },
        ),
    };
    let sparse_layers = (0..num_layers)
        .map(|l| {
            file.tensor_info(&format!("blk.{l}.ffn_gate_inp.weight"))
                .is_some()
        })
        .collect();
    Ok(Some(MoeOptions {
        num_experts,
        top_k,
        expert_intermediate,
        renormalize,
        shared_expert_intermediate,
        sparse_layers,
    }))
}

/// Gemma 2's options as llama.cpp reads them: `attention.sliding_window` (4096 when absent,
/// llama.cpp's default) on every other layer (the first sliding), both soft-caps from their
/// keys, one rope base. The files carry no `query_pre_attn_scalar`: llama.cpp scales scores by
/// `head_dim^-1/2`, but for the 46-layer 27B by `(hidden / heads)^-1/2`, which is what that
/// checkpoint's config says.
fn gemma2_options(
    file: &GgufFile,
    key: &dyn Fn(&str) -> String,
    num_layers: usize,
    head_dim: usize,
    hidden_per_head: usize,
) -> Result<GemmaOptions> {
    let window = file
        .opt_usize(&key("attention.sliding_window"))
        .map_err(gguf_err)?
        .unwrap_or(4096);
    let cap = |k: &str| -> Result<Option<f64>> {
        Ok(file
            .opt_f64(&key(k))
            .map_err(gguf_err)?
            .filter(|&c| c > 0.0))
    };
    let scalar = if num_layers == 46 {
        hidden_per_head
    } else {
        head_dim
    };
    let sliding = sliding_layers(file, key, num_layers, 2)?;
    Ok(GemmaOptions {
        query_pre_attn_scalar: scalar as f64,
        attn_logit_softcapping: cap("attn_logit_softcapping")?,
        final_logit_softcapping: cap("final_logit_softcapping")?,
        layer_windows: sliding.iter().map(|&s| s.then_some(window)).collect(),
        rope_local_theta: None,
    })
}

/// Gemma 3's options: `attention.sliding_window` on five layers of every six, a local rope
/// base of 10 000 on those, no soft-caps.
fn gemma3_options(
    file: &GgufFile,
    key: &dyn Fn(&str) -> String,
    num_layers: usize,
    head_dim: usize,
) -> Result<GemmaOptions> {
    let window = file
        .opt_usize(&key("attention.sliding_window"))
        .map_err(gguf_err)?
        .ok_or_else(|| {
            gguf_err(GgufError::MissingKey {
                path: file.path().to_path_buf(),
                key: key("attention.sliding_window"),
            })
        })?;
    let sliding = sliding_layers(file, key, num_layers, 6)?;
    Ok(GemmaOptions {
        query_pre_attn_scalar: head_dim as f64,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
        layer_windows: sliding.iter().map(|&s| s.then_some(window)).collect(),
        rope_local_theta: Some(10_000.0),
    })
}

/// Which layers slide, as llama.cpp's `load_swa_pattern` reads it: an array of booleans in
/// `attention.sliding_window_pattern`, or a period `n` there (every layer but each `n`-th
/// slides), or the architecture's `default_period`.
fn sliding_layers(
    file: &GgufFile,
    key: &dyn Fn(&str) -> String,
    num_layers: usize,
    default_period: usize,
) -> Result<Vec<bool>> {
    let k = key("attention.sliding_window_pattern");
    let invalid = |reason: String| {
        gguf_err(GgufError::Invalid {
            path: file.path().to_path_buf(),
            reason: format!("{k} {reason}"),
        })
    };
    let period = match file.get(&k).map(|v| v.as_array()) {
        Some(Some(items)) => {
            let flags = items
                .iter()
                .map(|f| {
                    f.as_bool()
                        .ok_or_else(|| invalid("holds a non-boolean".into()))
                })
                .collect::<Result<Vec<bool>>>()?;
            if flags.len() != num_layers {
                return Err(invalid(format!(
                    "has {} entries for {num_layers} layers",
                    flags.len()
                )));
            }
            return Ok(flags);
        }
        Some(None) => file
            .opt_usize(&k)
            .map_err(gguf_err)?
            .unwrap_or(default_period),
        None => default_period,
    };
    if period == 0 {
        return Err(invalid("must be at least 1".into()));
    }
    Ok((0..num_layers).map(|i| (i + 1) % period != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: LayerNames = crate::llama::GGUF_LAYER_NAMES;

    /// llama.cpp's Mixtral files say `llama` and carry `llama.expert_count`.
    #[test]
    fn llama_files_with_experts_are_mixtral() {
        use crate::gguf::reader::MetaValue;
        use crate::gguf::reader::writer::write;
        let dir = std::env::temp_dir().join(format!("indus-gguf-moe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let open = |experts: u32| {
            let meta = vec![
                (
                    "general.architecture".to_string(),
                    MetaValue::Str("llama".into()),
                ),
                ("llama.expert_count".into(), MetaValue::U32(experts)),
            ];
            let path = dir.join(format!("e{experts}.gguf"));
            std::fs::write(&path, write(&meta, &[])).unwrap();
            architecture(&GgufFile::open(&path).unwrap()).unwrap().0
        };
        assert_eq!(open(8), Architecture::Mixtral);
        assert_eq!(open(0), Architecture::Llama);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// llama.cpp's `load_swa_pattern`: a boolean per layer, or a period, or the default.
    #[test]
    fn sliding_layers_follow_the_pattern_key() {
        use crate::gguf::reader::MetaValue;
        use crate::gguf::reader::writer::write;
        let dir = std::env::temp_dir().join(format!("indus-gguf-swa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let read = |name: &str, pattern: Option<MetaValue>, default: usize| {
            let meta: Vec<(String, MetaValue)> = pattern
                .into_iter()
                .map(|p| ("gemma2.attention.sliding_window_pattern".to_string(), p))
                .collect();
            let path = dir.join(name);
            std::fs::write(&path, write(&meta, &[])).unwrap();
            let file = GgufFile::open(&path).unwrap();
            sliding_layers(&file, &|k| format!("gemma2.{k}"), 4, default).map_err(|e| e.to_string())
        };
        assert_eq!(read("d.gguf", None, 2), Ok(vec![true, false, true, false]));
        assert_eq!(
            read("n.gguf", Some(MetaValue::U32(4)), 2),
            Ok(vec![true, true, true, false])
        );
        let flags = [false, true, true, false].map(MetaValue::Bool).to_vec();
        assert_eq!(
            read("a.gguf", Some(MetaValue::Array(flags)), 2),
            Ok(vec![false, true, true, false])
        );
        let short = vec![MetaValue::Bool(true)];
        let e = read("s.gguf", Some(MetaValue::Array(short)), 2).unwrap_err();
        assert!(
            e.contains("sliding_window_pattern") && e.contains("1 entries"),
            "{e}"
        );
        let e = read("z.gguf", Some(MetaValue::U32(0)), 2).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn gemma_norms_have_their_own_names() {
        let g = layer_names(Architecture::Gemma3);
        let name = |n: &str| gguf_name(g, &format!("model.layers.3.{n}.weight")).unwrap();
        assert_eq!(
            name("post_attention_layernorm"),
            "blk.3.post_attention_norm.weight"
        );
        assert_eq!(name("pre_feedforward_layernorm"), "blk.3.ffn_norm.weight");
        assert_eq!(
            name("post_feedforward_layernorm"),
            "blk.3.post_ffw_norm.weight"
        );
        assert_eq!(name("self_attn.q_norm"), "blk.3.attn_q_norm.weight");
        assert_eq!(name("mlp.gate_proj"), "blk.3.ffn_gate.weight");
    }

    #[test]
    fn names_map_through_the_table() {
        assert_eq!(
            gguf_name(LLAMA, "model.embed_tokens.weight").unwrap(),
            "token_embd.weight"
        );
        assert_eq!(
            gguf_name(LLAMA, "model.layers.17.self_attn.k_proj.bias").unwrap(),
            "blk.17.attn_k.bias"
        );
        assert_eq!(
            gguf_name(LLAMA, "model.layers.0.post_attention_layernorm.weight").unwrap(),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(gguf_name(LLAMA, "model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_name(LLAMA, "model.layers.1.unknown.weight"), None);
    }
}
