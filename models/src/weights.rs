//! Weight sources: real safetensors shards (memory-mapped), a GGUF file (memory-mapped, kept
//! quantized), or random weights of the checkpoint's exact shapes (`--load-format dummy`, as
//! vLLM has) for benchmarks of full-size models without the weights.

use crate::gguf::weights::GgufWeights;
use crate::linear::{Embedding, Linear, fused_bias, split_bias};
use crate::quant::{Fp8Config, Fp8Weight, Int4Config, Int4Weight, QuantConfig, QuantMethod};
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadFormat {
    /// Safetensors shards from the model directory.
    #[default]
    Auto,
    Safetensors,
    /// A `.gguf` file: config, weights (quantized) and tokenizer in one.
    Gguf,
    /// Random weights of the config's real shapes; only config.json and the tokenizer needed.
    Dummy,
}

impl std::str::FromStr for LoadFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "safetensors" => Ok(Self::Safetensors),
            "gguf" => Ok(Self::Gguf),
            "dummy" => Ok(Self::Dummy),
            other => Err(format!(
                "unknown load format `{other}` (auto, safetensors, gguf, dummy)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dtype: DType,
    pub device: Device,
    pub format: LoadFormat,
    /// Seed of the dummy weights, so benchmark runs are repeatable.
    pub seed: u64,
    /// Load quantized weights as dense weights of `dtype` (the reference path).
    pub dequantize: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            format: LoadFormat::Auto,
            seed: 0,
            dequantize: false,
        }
    }
}

/// Hands out named tensors of an expected shape, from a checkpoint or at random.
pub(crate) enum WeightSource {
    /// Safetensors shards, and the checkpoint's quantization if it has one (or the FP8
    /// quantization to apply at load).
    Checkpoint(VarBuilder<'static>, Option<CheckpointQuant>),
    Dummy {
        dtype: DType,
        device: Device,
        rng: Box<std::cell::RefCell<rand::rngs::StdRng>>,
        /// `--quantization fp8`: the random weights quantized at load, as a dense
        /// checkpoint's would be (benchmarks of FP8 at full size without the weights).
        fp8_at_load: Option<CheckpointQuant>,
    },
    Gguf(Box<GgufWeights>),
}

/// How the quantized layers of a checkpoint load.
pub(crate) struct CheckpointQuant {
    config: QuantConfig,
    /// `--dequantize`: dense weights of `dtype` computed from the quantized ones.
    dequantize: bool,
    dtype: DType,
}

impl WeightSource {
    pub(crate) fn new(weights: &[PathBuf], opts: &LoadOptions) -> Result<Self> {
        Self::with_quantization(weights, opts, None)
    }

    /// As [`Self::new`], reading the layers that the checkpoint stores quantized
    /// (`{prefix}.qweight` for int4, `{prefix}.weight_scale` beside an E4M3 weight for FP8)
    /// as `quant` says; the others stay dense. With [`Fp8Config::at_load`] every linear
    /// layer but the output head and MoE routers is quantized as it loads.
    pub(crate) fn with_quantization(
        weights: &[PathBuf],
        opts: &LoadOptions,
        quant: Option<QuantConfig>,
    ) -> Result<Self> {
        let quant = quant.map(|config| CheckpointQuant {
            config,
            dequantize: opts.dequantize,
            dtype: opts.dtype,
        });
        if opts.format == LoadFormat::Dummy {
            use rand::SeedableRng;
            let fp8_at_load = match quant {
                None => None,
                Some(q) if matches!(q.config, QuantConfig::Fp8(c) if c.at_load) => Some(q),
                Some(q) => {
                    return Err(ModelError::Weight {
                        name: "--load-format dummy".into(),
                        reason: format!(
                            "dummy weights cannot be {}-quantized (only --quantization fp8 quantizes at load)",
                            q.config.method()
                        ),
                    });
                }
            };
            return Ok(Self::Dummy {
                dtype: opts.dtype,
                device: opts.device.clone(),
                rng: Box::new(std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(
                    opts.seed,
                ))),
                fp8_at_load,
            });
        }
        for w in weights {
            if !w.is_file() {
                return Err(ModelError::MissingFile(w.clone()));
            }
        }
        // SAFETY: the shards are mapped read-only; like every mmap loader we rely on nobody
        // truncating the files while the server runs.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(weights, opts.dtype, &opts.device) }
            .map_err(|e| ModelError::Weight {
                name: weights
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                reason: e.to_string(),
            })?;
        Ok(Self::Checkpoint(vb, quant))
    }

    pub(crate) fn gguf(weights: GgufWeights) -> Self {
        Self::Gguf(Box::new(weights))
    }

    /// One projection of row blocks `names` (`[rows_i, cols]` each), fused into one layer,
    /// with the blocks' biases when `biases` names them.
    pub(crate) fn linear(
        &self,
        names: &[String],
        rows: &[usize],
        cols: usize,
        biases: Option<&[String]>,
    ) -> Result<Linear> {
        if let Self::Gguf(g) = self {
            return g.linear(names, rows, cols, biases);
        }
        if let Self::Checkpoint(vb, Some(q)) = self {
            match &q.config {
                QuantConfig::Int4(c)
                    if names.iter().any(|n| vb.contains_tensor(&qweight_name(n))) =>
                {
                    return self.quantized_linear(q, names, rows, biases, |name, r| {
                        self.int4_block(vb, c, name, r, cols)
                    });
                }
                QuantConfig::Fp8(c)
                    if !c.at_load && names.iter().any(|n| fp8_scale_name(vb, n).is_some()) =>
                {
                    return self.quantized_linear(q, names, rows, biases, |name, r| {
                        self.fp8_block(vb, c, name, r, cols)
                    });
                }
                _ => {}
            }
        }
        let total: usize = rows.iter().sum();
        let fused = |names: &[String], shape: &dyn Fn(usize) -> Vec<usize>| -> Result<Tensor> {
            if matches!(self, Self::Dummy { .. }) {
                // Same shape, no concatenation cost.
                return self.get(&names[0], &shape(total));
            }
            let parts = names
                .iter()
                .zip(rows)
                .map(|(n, &r)| self.get(n, &shape(r)))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&parts, 0)?)
        };
        let weight = fused(names, &|r| vec![r, cols])?;
        let bias = biases.map(|b| fused(b, &|r| vec![r])).transpose()?;
        match self.fp8_at_load() {
            Some((q, c)) if quantized_at_load(&names[0]) => {
                let w = Fp8Weight::quantize(&weight, c.activations)?;
                Ok(if q.dequantize {
                    Linear::dense(w.dequantize(q.dtype)?, bias)
                } else {
                    Linear::Fp8 {
                        weight: std::sync::Arc::new(w),
                        bias,
                    }
                })
            }
            _ => Ok(Linear::dense(weight, bias)),
        }
    }

    /// `--quantization fp8` on dense weights: the settings, if that is what this source does.
    fn fp8_at_load(&self) -> Option<(&CheckpointQuant, Fp8Config)> {
        let q = match self {
            Self::Checkpoint(_, Some(q)) => q,
            Self::Dummy {
                fp8_at_load: Some(q),
                ..
            } => q,
            _ => return None,
        };
        match q.config {
            QuantConfig::Fp8(c) if c.at_load => Some((q, c)),
            _ => None,
        }
    }

    /// A projection whose row blocks (some or all) the checkpoint stores quantized, each
    /// read by `block`: one quantized weight when the blocks join, else the blocks side by
    /// side; dense with `--dequantize`.
    fn quantized_linear(
        &self,
        q: &CheckpointQuant,
        names: &[String],
        rows: &[usize],
        biases: Option<&[String]>,
        block: impl Fn(&str, usize) -> Result<Block>,
    ) -> Result<Linear> {
        let bias = fused_bias(biases, rows, |n, shape| self.get(n, shape))?;
        let blocks = names
            .iter()
            .zip(rows)
            .map(|(name, &r)| block(name, r))
            .collect::<Result<Vec<_>>>()?;
        if q.dequantize {
            let dense = blocks
                .iter()
                .map(|b| b.dequantize(q.dtype))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Linear::dense(Tensor::cat(&dense, 0)?, bias));
        }
        if let Some(joined) = Block::join(&blocks)? {
            return Ok(match joined {
                Block::Packed(w) => Linear::Int4 {
                    weight: std::sync::Arc::new(w),
                    bias,
                },
                Block::Fp8(w) => Linear::Fp8 {
                    weight: std::sync::Arc::new(w),
                    bias,
                },
                Block::Dense(t) => Linear::dense(t, bias),
            });
        }
        let mut out = Vec::with_capacity(blocks.len());
        for (b, bias) in blocks.into_iter().zip(split_bias(bias.as_ref(), rows)?) {
            out.push(match b {
                Block::Packed(w) => Linear::Int4 {
                    weight: std::sync::Arc::new(w),
                    bias,
                },
                Block::Fp8(w) => Linear::Fp8 {
                    weight: std::sync::Arc::new(w),
                    bias,
                },
                Block::Dense(t) => Linear::dense(t, bias),
            });
        }
        Ok(Linear::Concat(out))
    }

    /// One row block of an int4 checkpoint: packed, or dense when it was left unquantized.
    fn int4_block(
        &self,
        vb: &VarBuilder<'static>,
        c: &Int4Config,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Block> {
        if !vb.contains_tensor(&qweight_name(name)) {
            return Ok(Block::Dense(self.get(name, &[rows, cols])?));
        }
        let get = |name: &str, dtype: DType| raw_tensor(vb, name, dtype);
        let prefix = name.strip_suffix(".weight").unwrap_or(name);
        let parts = match c.method {
            QuantMethod::Awq => crate::quant::awq::load(&get, prefix, rows, cols, c)?,
            _ => crate::quant::gptq::load(&get, prefix, rows, cols, c)?,
        };
        Ok(Block::Packed(Int4Weight::new(prefix, parts, vb.device())?))
    }

    /// One row block of an FP8 checkpoint: E4M3 with its scales, or dense when it was left
    /// unquantized.
    fn fp8_block(
        &self,
        vb: &VarBuilder<'static>,
        c: &Fp8Config,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Block> {
        match fp8_layer(vb, c, name, rows, cols)? {
            Some(w) => Ok(Block::Fp8(w)),
            None => Ok(Block::Dense(self.get(name, &[rows, cols])?)),
        }
    }

    pub(crate) fn embedding(&self, name: &str, shape: &[usize]) -> Result<Embedding> {
        match self {
            Self::Gguf(g) => g.embedding(name, shape),
            _ => Ok(Embedding::Dense(self.get(name, shape)?)),
        }
    }

    /// One projection of every expert of a mixture-of-experts block, stacked:
    /// `[experts, rows, cols]`. Checkpoints store `{prefix}.experts.{e}.{name}.weight` per
    /// expert; GGUF files one stacked tensor (dequantized here: experts run dense).
    pub(crate) fn stacked_experts(
        &self,
        prefix: &str,
        name: &str,
        experts: usize,
        [rows, cols]: [usize; 2],
    ) -> Result<Tensor> {
        if let Self::Gguf(g) = self {
            return g.get(
                &format!("{prefix}.experts.{name}.weight"),
                &[experts, rows, cols],
            );
        }
        let each = (0..experts)
            .map(|e| {
                self.get(
                    &format!("{prefix}.experts.{e}.{name}.weight"),
                    &[rows, cols],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&each, 0)?)
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match self {
            Self::Gguf(g) => g.get(name, shape),
            Self::Checkpoint(vb, quant) => {
                if let Some(scale) = fp8_scale_name(vb, name) {
                    // An FP8 tensor read densely (MoE experts, a tied table): dequantized.
                    let Some(CheckpointQuant {
                        config: QuantConfig::Fp8(c),
                        dtype,
                        ..
                    }) = quant
                    else {
                        return Err(ModelError::Weight {
                            name: name.to_string(),
                            reason: format!(
                                "the checkpoint stores it as FP8 ({scale}) but config.json has no FP8 quantization_config"
                            ),
                        });
                    };
                    let [rows, cols] = shape else {
                        return Err(ModelError::Weight {
                            name: name.to_string(),
                            reason: format!("an FP8 tensor of shape {shape:?}: expected a matrix"),
                        });
                    };
                    if let Some(w) = fp8_layer(vb, c, name, *rows, *cols)? {
                        note_fp8_read_densely();
                        return w.dequantize(*dtype);
                    }
                }
                if !vb.contains_tensor(name) {
                    let packed = vb.contains_tensor(&qweight_name(name));
                    return Err(ModelError::Weight {
                        name: name.to_string(),
                        reason: if packed && quant.is_none() {
                            format!(
                                "the checkpoint stores it quantized ({}) but config.json has no quantization_config",
                                qweight_name(name)
                            )
                        } else {
                            "missing from the checkpoint".into()
                        },
                    });
                }
                vb.get(shape, name).map_err(|e| ModelError::Weight {
                    name: name.to_string(),
                    reason: e.to_string(),
                })
            }
            Self::Dummy {
                dtype, device, rng, ..
            } => {
                use rand::Rng;
                // Small uniform values keep activations finite through many layers; norms
                // get ones, as a real checkpoint's are near one.
                let seed: u64 = rng.borrow_mut().random();
                let t = if name.ends_with("norm.weight") {
                    Tensor::ones(shape, *dtype, device)?
                } else if device.is_cpu() {
                    // The CPU rng cannot be seeded through candle: draw from ours.
                    let mut rng = rng.borrow_mut();
                    let n: usize = shape.iter().product();
                    let values: Vec<f32> =
                        (0..n).map(|_| rng.random_range(-0.02f32..0.02)).collect();
                    Tensor::from_vec(values, shape, device)?.to_dtype(*dtype)?
                } else {
                    device.set_seed(seed)?;
                    Tensor::rand(-0.02f32, 0.02f32, shape, device)?.to_dtype(*dtype)?
                };
                Ok(t)
            }
        }
    }

    /// Whether the weights come from a GGUF file (whose converter may have rewritten some
    /// tensors, e.g. Gemma's norms as `1 + w`).
    pub(crate) fn is_gguf(&self) -> bool {
        matches!(self, Self::Gguf(_))
    }

    /// Whether a checkpoint has `name` (dummy weights have everything).
    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            Self::Checkpoint(vb, _) => vb.contains_tensor(name),
            Self::Gguf(g) => g.contains(name),
            Self::Dummy { .. } => true,
        }
    }
}

/// One row block of a projection in a quantized checkpoint.
enum Block {
    Packed(Int4Weight),
    Fp8(Fp8Weight),
    /// Left unquantized by the checkpoint.
    Dense(Tensor),
}

impl Block {
    fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        match self {
            Self::Packed(w) => w.dequantize(dtype),
            Self::Fp8(w) => w.dequantize(dtype),
            Self::Dense(t) => Ok(t.clone()),
        }
    }

    /// The blocks as one weight, when they are all quantized alike and can be joined.
    fn join(blocks: &[Block]) -> Result<Option<Block>> {
        let int4: Vec<Int4Weight> = blocks
            .iter()
            .filter_map(|b| match b {
                Self::Packed(w) => Some(w.clone()),
                _ => None,
            })
            .collect();
        if int4.len() == blocks.len() {
            return Ok(Int4Weight::join(&int4)?.map(Self::Packed));
        }
        let fp8: Vec<Fp8Weight> = blocks
            .iter()
            .filter_map(|b| match b {
                Self::Fp8(w) => Some(w.clone()),
                _ => None,
            })
            .collect();
        if fp8.len() == blocks.len() {
            return Ok(Fp8Weight::join(&fp8)?.map(Self::Fp8));
        }
        Ok(None)
    }
}

/// A checkpoint tensor as stored (`dtype` it is converted to), if the checkpoint has it.
fn raw_tensor(vb: &VarBuilder<'static>, name: &str, dtype: DType) -> Result<Option<Tensor>> {
    if !vb.contains_tensor(name) {
        return Ok(None);
    }
    vb.get_unchecked_dtype(name, dtype)
        .map(Some)
        .map_err(|e| ModelError::Weight {
            name: name.to_string(),
            reason: e.to_string(),
        })
}

/// The scale tensor beside an FP8 weight `{prefix}.weight`: `{prefix}.weight_scale`
/// (compressed-tensors, vLLM) or `{prefix}.weight_scale_inv` (DeepSeek-V3-style blocks,
/// which multiply despite the name).
fn fp8_scale_name(vb: &VarBuilder<'static>, weight: &str) -> Option<String> {
    let prefix = weight.strip_suffix(".weight")?;
    ["weight_scale", "weight_scale_inv"]
        .into_iter()
        .map(|s| format!("{prefix}.{s}"))
        .find(|n| vb.contains_tensor(n))
}

/// The FP8 layer `weight` (`[rows, cols]`) with its scales; `None` when the checkpoint
/// stores it dense.
fn fp8_layer(
    vb: &VarBuilder<'static>,
    c: &Fp8Config,
    weight: &str,
    rows: usize,
    cols: usize,
) -> Result<Option<Fp8Weight>> {
    let Some(scale_name) = fp8_scale_name(vb, weight) else {
        return Ok(None);
    };
    let prefix = weight.strip_suffix(".weight").unwrap_or(weight);
    let missing = |name: &str| ModelError::Weight {
        name: name.to_string(),
        reason: "missing from the FP8 checkpoint".into(),
    };
    let w = raw_tensor(vb, weight, DType::F8E4M3)?.ok_or_else(|| missing(weight))?;
    crate::quant::gptq::check_shape(&w, weight, rows, cols)?;
    let scale = raw_tensor(vb, &scale_name, DType::F32)?.ok_or_else(|| missing(&scale_name))?;
    let input_scale = raw_tensor(vb, &format!("{prefix}.input_scale"), DType::F32)?;
    Fp8Weight::from_checkpoint(prefix, w, scale, input_scale, c.weights, c.activations).map(Some)
}

/// Linear layers `--quantization fp8` quantizes: all but the output head (as vLLM, which
/// keeps it in the compute dtype for accuracy) and MoE routers (a few rows whose rounding
/// would move tokens between experts).
fn quantized_at_load(weight: &str) -> bool {
    !(weight == "lm_head.weight"
        || weight.ends_with(".gate.weight")
        || weight.ends_with("shared_expert_gate.weight")
        || weight.ends_with(".router.weight"))
}

/// Tells once that FP8 tensors outside the linear layers (MoE experts) are held dense.
fn note_fp8_read_densely() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "the FP8 checkpoint's tensors outside the linear layers (MoE experts) are dequantized at load and held dense"
        );
    });
}

/// `{prefix}.qweight` for the weight `{prefix}.weight`.
fn qweight_name(weight: &str) -> String {
    format!(
        "{}.qweight",
        weight.strip_suffix(".weight").unwrap_or(weight)
    )
}
