//! FP8 (E4M3) checkpoints' `quantization_config`, in the two spellings that exist:
//!
//! - vLLM / transformers, `quant_method: "fp8"`: `activation_scheme` (`dynamic` or `static`,
//!   the latter with an `input_scale` per layer) and, for DeepSeek-V3-style checkpoints,
//!   `weight_block_size: [rows, cols]` (scales in `weight_scale_inv`); one `weight_scale` per
//!   tensor otherwise;
//! - llm-compressor's compressed-tensors, `quant_method: "compressed-tensors"` with format
//!   `float-quantized` (or `naive-quantized`): `config_groups.*.weights` (8-bit `float`,
//!   strategy `tensor`, `channel` or `block` with `block_structure`) and
//!   `input_activations` (`dynamic` per `token`, static per `tensor`, or null: weight-only).
//!
//! `--quantization fp8` on a dense checkpoint quantizes it at load ([`Fp8Config::at_load`]).
//! Which layers are FP8 is read per layer from the tensors (a `weight_scale` beside the
//! weight), so `ignore` / `modules_to_not_convert` need no parsing: those layers are dense.

use serde_json::Value;

/// How a layer's weight scales are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8Weights {
    /// One scale per tensor.
    Tensor,
    /// One scale per output row.
    Channel,
    /// One scale per `[rows, cols]` block of the `[N, K]` weight.
    Block { rows: usize, cols: usize },
}

/// How activations are quantized before the matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8Activations {
    /// A scale per token (row), from that row's largest magnitude (W8A8); for block-scaled
    /// weights, per token and per block width of inputs, as vLLM's block FP8 does.
    DynamicPerToken,
    /// The checkpoint's calibrated `input_scale` per layer (W8A8).
    Static,
    /// Activations stay in the compute dtype (W8A16, weight-only).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Config {
    pub weights: Fp8Weights,
    pub activations: Fp8Activations,
    /// The checkpoint is dense and is quantized at load (`--quantization fp8`).
    pub at_load: bool,
}

impl Fp8Config {
    /// `--quantization fp8` on a dense checkpoint: per-channel weight scales (a scale per
    /// output row costs nothing in the GEMM epilogue and loses less than one per tensor) and
    /// dynamic per-token activation scales, as vLLM's online FP8 does for activations.
    pub fn at_load() -> Self {
        Self {
            weights: Fp8Weights::Channel,
            activations: Fp8Activations::DynamicPerToken,
            at_load: true,
        }
    }

    /// From `quantization_config` (`q`); an error names the key.
    pub(crate) fn from_quantization_config(q: &Value) -> Result<Self, String> {
        match q.get("quant_method").and_then(Value::as_str) {
            Some("fp8") => Self::from_vllm(q),
            _ => Self::from_compressed_tensors(q),
        }
    }

    fn from_vllm(q: &Value) -> Result<Self, String> {
        let activations = match q.get("activation_scheme").and_then(Value::as_str) {
            None | Some("dynamic") => Fp8Activations::DynamicPerToken,
            Some("static") => Fp8Activations::Static,
            Some(other) => {
                return Err(format!(
                    "quantization_config.activation_scheme = {other:?}: expected dynamic or static"
                ));
            }
        };
        let weights = match q.get("weight_block_size") {
            None | Some(Value::Null) => Fp8Weights::Tensor,
            Some(v) => block(v, "quantization_config.weight_block_size")?,
        };
        if matches!(weights, Fp8Weights::Block { .. }) && activations == Fp8Activations::Static {
            return Err(
                "quantization_config: static activation scales with weight_block_size are not supported"
                    .into(),
            );
        }
        Ok(Self {
            weights,
            activations,
            at_load: false,
        })
    }

    fn from_compressed_tensors(q: &Value) -> Result<Self, String> {
        match q.get("format").and_then(Value::as_str) {
            None | Some("float-quantized") | Some("naive-quantized") => {}
            Some(other) => {
                return Err(format!(
                    "quantization_config.format = {other:?}: only FP8 compressed-tensors (float-quantized) is supported"
                ));
            }
        }
        let groups = q
            .get("config_groups")
            .and_then(Value::as_object)
            .filter(|g| !g.is_empty())
            .ok_or("quantization_config.config_groups is missing")?;
        let mut found: Option<Self> = None;
        for (name, group) in groups {
            let key = format!("quantization_config.config_groups.{name}");
            let scheme = Self::scheme(group, &key)?;
            match found {
                Some(f) if f != scheme => {
                    return Err(format!(
                        "{key}: its scheme differs from another group's; mixed FP8 schemes are not supported"
                    ));
                }
                _ => found = Some(scheme),
            }
        }
        found.ok_or_else(|| "quantization_config.config_groups is empty".into())
    }

    /// One compressed-tensors scheme (`weights` + `input_activations`) at `key`.
    fn scheme(group: &Value, key: &str) -> Result<Self, String> {
        let w = group
            .get("weights")
            .filter(|w| !w.is_null())
            .ok_or_else(|| format!("{key}.weights is missing"))?;
        let is_fp8 = |args: &Value, key: &str| -> Result<(), String> {
            let bits = args.get("num_bits").and_then(Value::as_i64);
            let kind = args.get("type").and_then(Value::as_str);
            if bits == Some(8) && kind == Some("float") {
                return Ok(());
            }
            Err(format!(
                "{key}: num_bits {} type {}: only 8-bit float (FP8 E4M3) is supported",
                bits.map_or("?".into(), |b| b.to_string()),
                kind.unwrap_or("?")
            ))
        };
        is_fp8(w, &format!("{key}.weights"))?;
        let weights = match w.get("strategy").and_then(Value::as_str) {
            Some("tensor") => Fp8Weights::Tensor,
            Some("channel") => Fp8Weights::Channel,
            Some("block") => block(
                w.get("block_structure").unwrap_or(&Value::Null),
                &format!("{key}.weights.block_structure"),
            )?,
            other => {
                return Err(format!(
                    "{key}.weights.strategy = {other:?}: expected tensor, channel or block"
                ));
            }
        };
        let activations = match group.get("input_activations") {
            None | Some(Value::Null) => Fp8Activations::None,
            Some(a) => {
                let akey = format!("{key}.input_activations");
                is_fp8(a, &akey)?;
                let dynamic = a.get("dynamic").and_then(Value::as_bool).unwrap_or(false);
                match (a.get("strategy").and_then(Value::as_str), dynamic) {
                    // Dynamic per-tensor is computed per token: a finer scale, never a
                    // coarser one.
                    (Some("token") | Some("tensor"), true) => Fp8Activations::DynamicPerToken,
                    (Some("tensor"), false) => Fp8Activations::Static,
                    (strategy, _) => {
                        return Err(format!(
                            "{akey}: strategy {strategy:?} with dynamic = {dynamic} is not supported (token+dynamic or tensor)"
                        ));
                    }
                }
            }
        };
        Ok(Self {
            weights,
            activations,
            at_load: false,
        })
    }

    /// The name `/v1/models` shows, e.g. `fp8-w8a8-channel`, `fp8-w8a8-static-tensor`,
    /// `fp8-w8a16-block128x128`.
    pub fn label(&self) -> String {
        label(self.weights, self.activations)
    }
}

pub(crate) fn label(weights: Fp8Weights, activations: Fp8Activations) -> String {
    let a = match activations {
        Fp8Activations::DynamicPerToken => "w8a8-",
        Fp8Activations::Static => "w8a8-static-",
        Fp8Activations::None => "w8a16-",
    };
    let w = match weights {
        Fp8Weights::Tensor => "tensor".to_string(),
        Fp8Weights::Channel => "channel".to_string(),
        Fp8Weights::Block { rows, cols } => format!("block{rows}x{cols}"),
    };
    format!("fp8-{a}{w}")
}

/// `[rows, cols]`, both positive.
fn block(v: &Value, key: &str) -> Result<Fp8Weights, String> {
    let dims: Vec<u64> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    match dims[..] {
        [rows, cols] if rows > 0 && cols > 0 => Ok(Fp8Weights::Block {
            rows: rows as usize,
            cols: cols as usize,
        }),
        _ => Err(format!("{key} = {v}: expected [rows, cols]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Fp8Config, String> {
        Fp8Config::from_quantization_config(&serde_json::from_str(q).unwrap())
    }

    #[test]
    fn reads_llm_compressor_and_vllm_configs() {
        // llm-compressor FP8_DYNAMIC, as it writes config.json.
        let c = parse(
            r#"{"quant_method": "compressed-tensors", "format": "float-quantized",
                "quantization_status": "compressed", "ignore": ["lm_head"],
                "config_groups": {"group_0": {"targets": ["Linear"],
                  "weights": {"num_bits": 8, "type": "float", "strategy": "channel",
                              "symmetric": true, "dynamic": false},
                  "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                        "symmetric": true, "dynamic": true}}}}"#,
        )
        .unwrap();
        assert_eq!(c.weights, Fp8Weights::Channel);
        assert_eq!(c.activations, Fp8Activations::DynamicPerToken);
        assert_eq!(c.label(), "fp8-w8a8-channel");
        // FP8 static per tensor, and weight-only.
        let s = parse(
            r#"{"quant_method": "compressed-tensors", "config_groups": {"g": {
                "weights": {"num_bits": 8, "type": "float", "strategy": "tensor"},
                "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor",
                                      "dynamic": false}}}}"#,
        )
        .unwrap();
        assert_eq!(s.label(), "fp8-w8a8-static-tensor");
        let w = parse(
            r#"{"quant_method": "compressed-tensors", "config_groups": {"g": {
                "weights": {"num_bits": 8, "type": "float", "strategy": "block",
                            "block_structure": [128, 128]}, "input_activations": null}}}"#,
        )
        .unwrap();
        assert_eq!(w.label(), "fp8-w8a16-block128x128");
        // vLLM / transformers: per tensor, static; DeepSeek-V3 blocks, dynamic.
        let v = parse(r#"{"quant_method": "fp8", "activation_scheme": "static"}"#).unwrap();
        assert_eq!(
            (v.weights, v.activations),
            (Fp8Weights::Tensor, Fp8Activations::Static)
        );
        let d = parse(
            r#"{"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
                "weight_block_size": [128, 128]}"#,
        )
        .unwrap();
        assert_eq!(
            d.weights,
            Fp8Weights::Block {
                rows: 128,
                cols: 128
            }
        );
        assert!(!d.at_load && Fp8Config::at_load().at_load);
    }

    #[test]
    fn other_schemes_are_errors_naming_the_key() {
        let m = parse(
            r#"{"quant_method": "compressed-tensors", "format": "pack-quantized",
                "config_groups": {}}"#,
        )
        .unwrap_err();
        assert!(m.contains("quantization_config.format"), "{m}");
        let m = parse(
            r#"{"quant_method": "compressed-tensors", "config_groups": {"group_0": {
                "weights": {"num_bits": 8, "type": "int", "strategy": "channel"}}}}"#,
        )
        .unwrap_err();
        assert!(
            m.contains("config_groups.group_0.weights") && m.contains("type int"),
            "{m}"
        );
        let m = parse(
            r#"{"quant_method": "compressed-tensors", "config_groups": {"g": {
                "weights": {"num_bits": 8, "type": "float", "strategy": "group"}}}}"#,
        )
        .unwrap_err();
        assert!(m.contains("weights.strategy"), "{m}");
        let m = parse(r#"{"quant_method": "fp8", "weight_block_size": [128]}"#).unwrap_err();
        assert!(m.contains("weight_block_size"), "{m}");
        let m = parse(r#"{"quant_method": "fp8", "activation_scheme": "mx"}"#).unwrap_err();
        assert!(m.contains("activation_scheme"), "{m}");
        let m = parse(r#"{"quant_method": "compressed-tensors"}"#).unwrap_err();
        assert!(m.contains("config_groups"), "{m}");
    }
}
