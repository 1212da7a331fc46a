//! Weight sources: real safetensors shards (memory-mapped), a GGUF file (memory-mapped, kept
//! quantized), or random weights of the checkpoint's exact shapes (`--load-format dummy`, as
//! vLLM has) for benchmarks of full-size models without the weights.

use crate::gguf::weights::GgufWeights;
use crate::linear::{Embedding, Linear, fused_bias, split_bias};
use crate::quant::{Int4Weight, QuantConfig, QuantMethod};
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
    /// Safetensors shards, and the checkpoint's int4 quantization if it has one.
    Checkpoint(VarBuilder<'static>, Option<Int4Checkpoint>),
    Dummy {
        dtype: DType,
        device: Device,
        rng: Box<std::cell::RefCell<rand::rngs::StdRng>>,
    },
    Gguf(Box<GgufWeights>),
}

/// How the quantized layers of a GPTQ / AWQ checkpoint load.
pub(crate) struct Int4Checkpoint {
    config: QuantConfig,
    /// `--dequantize`: dense weights of `dtype` computed from the packed ones.
    dequantize: bool,
    dtype: DType,
    device: Device,
}

impl WeightSource {
    pub(crate) fn new(weights: &[PathBuf], opts: &LoadOptions) -> Result<Self> {
        Self::with_quantization(weights, opts, None)
    }

    /// As [`Self::new`], reading the layers that the checkpoint stores quantized
    /// (`{prefix}.qweight`) as `quant` says; the others stay dense.
    pub(crate) fn with_quantization(
        weights: &[PathBuf],
        opts: &LoadOptions,
        quant: Option<QuantConfig>,
    ) -> Result<Self> {
        if opts.format == LoadFormat::Dummy {
            use rand::SeedableRng;
            return Ok(Self::Dummy {
                dtype: opts.dtype,
                device: opts.device.clone(),
                rng: Box::new(std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(
                    opts.seed,
                ))),
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
        let quant = quant.map(|config| Int4Checkpoint {
            config,
            dequantize: opts.dequantize,
            dtype: opts.dtype,
            device: opts.device.clone(),
        });
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
        if let Self::Checkpoint(vb, Some(q)) = self
            && names.iter().any(|n| vb.contains_tensor(&qweight_name(n)))
        {
            return self.int4_linear(vb, q, names, rows, cols, biases);
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
        Ok(Linear::dense(weight, bias))
    }

    /// A projection whose blocks (some or all) are int4: one packed weight when the blocks
    /// join (same grouping), else the blocks side by side; dense with `--dequantize`.
    fn int4_linear(
        &self,
        vb: &VarBuilder<'static>,
        q: &Int4Checkpoint,
        names: &[String],
        rows: &[usize],
        cols: usize,
        biases: Option<&[String]>,
    ) -> Result<Linear> {
        let bias = fused_bias(biases, rows, |n, shape| self.get(n, shape))?;
        let get = |name: &str, dtype: DType| -> Result<Option<Tensor>> {
            if !vb.contains_tensor(name) {
                return Ok(None);
            }
            vb.get_unchecked_dtype(name, dtype)
                .map(Some)
                .map_err(|e| ModelError::Weight {
                    name: name.to_string(),
                    reason: e.to_string(),
                })
        };
        // Each block: packed, or dense when the checkpoint left it unquantized.
        let mut blocks: Vec<Block> = Vec::new();
        for (name, &r) in names.iter().zip(rows) {
            let prefix = name.strip_suffix(".weight").unwrap_or(name);
            if vb.contains_tensor(&qweight_name(name)) {
                let parts = match q.config.method {
                    QuantMethod::Gptq => {
                        crate::quant::gptq::load(&get, prefix, r, cols, &q.config)?
                    }
                    QuantMethod::Awq => crate::quant::awq::load(&get, prefix, r, cols, &q.config)?,
                };
                blocks.push(Block::Packed(Int4Weight::new(prefix, parts, &q.device)?));
            } else {
                blocks.push(Block::Dense(self.get(name, &[r, cols])?));
            }
        }
        if q.dequantize {
            let dense = blocks
                .iter()
                .map(|b| match b {
                    Block::Packed(w) => w.dequantize(q.dtype),
                    Block::Dense(t) => Ok(t.clone()),
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(Linear::dense(Tensor::cat(&dense, 0)?, bias));
        }
        let packed: Vec<Int4Weight> = blocks
            .iter()
            .filter_map(|b| match b {
                Block::Packed(w) => Some(w.clone()),
                Block::Dense(_) => None,
            })
            .collect();
        if packed.len() == blocks.len()
            && let Some(joined) = Int4Weight::join(&packed)?
        {
            return Ok(Linear::Int4 {
                weight: std::sync::Arc::new(joined),
                bias,
            });
        }
        let mut out = Vec::with_capacity(blocks.len());
        for (b, bias) in blocks.into_iter().zip(split_bias(bias.as_ref(), rows)?) {
            out.push(match b {
                Block::Packed(w) => Linear::Int4 {
                    weight: std::sync::Arc::new(w),
                    bias,
                },
                Block::Dense(t) => Linear::dense(t, bias),
            });
        }
        Ok(Linear::Concat(out))
    }

    pub(crate) fn embedding(&self, name: &str, shape: &[usize]) -> Result<Embedding> {
        match self {
            Self::Gguf(g) => g.embedding(name, shape),
            _ => Ok(Embedding::Dense(self.get(name, shape)?)),
        }
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match self {
            Self::Gguf(g) => g.get(name, shape),
            Self::Checkpoint(vb, quant) => {
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
            Self::Dummy { dtype, device, rng } => {
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

/// One row block of a projection in an int4 checkpoint.
enum Block {
    Packed(Int4Weight),
    /// Left unquantized by the checkpoint.
    Dense(Tensor),
}

/// `{prefix}.qweight` for the weight `{prefix}.weight`.
fn qweight_name(weight: &str) -> String {
    format!(
        "{}.qweight",
        weight.strip_suffix(".weight").unwrap_or(weight)
    )
}
