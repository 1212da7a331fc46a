//! Weight sources: real safetensors shards (memory-mapped), a GGUF file (memory-mapped, kept
//! quantized), or random weights of the checkpoint's exact shapes (`--load-format dummy`, as
//! vLLM has) for benchmarks of full-size models without the weights.

use crate::gguf::weights::GgufWeights;
use crate::linear::{Embedding, Linear};
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
    Checkpoint(VarBuilder<'static>),
    Dummy {
        dtype: DType,
        device: Device,
        rng: Box<std::cell::RefCell<rand::rngs::StdRng>>,
    },
    Gguf(Box<GgufWeights>),
}

impl WeightSource {
    pub(crate) fn new(weights: &[PathBuf], opts: &LoadOptions) -> Result<Self> {
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
        Ok(Self::Checkpoint(vb))
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
            Self::Checkpoint(vb) => {
                if !vb.contains_tensor(name) {
                    return Err(ModelError::Weight {
                        name: name.to_string(),
                        reason: "missing from the checkpoint".into(),
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
            Self::Checkpoint(vb) => vb.contains_tensor(name),
            Self::Gguf(g) => g.contains(name),
            Self::Dummy { .. } => true,
        }
    }
}
