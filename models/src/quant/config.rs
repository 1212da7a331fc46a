//! config.json's `quantization_config`, as AutoGPTQ / optimum (GPTQ), AutoAWQ (AWQ),
//! llm-compressor (compressed-tensors FP8) and vLLM / transformers (`fp8`) write it, read into
//! what the loader needs; anything this build cannot run is an error naming the key.

use super::fp8_config::Fp8Config;
use crate::{ModelError, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `--quantization` / `quant_method` (vLLM's names; `compressed-tensors` is read as the FP8
/// it holds, the only compressed-tensors scheme this build runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantMethod {
    Gptq,
    Awq,
    Fp8,
}

impl QuantMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gptq => "gptq",
            Self::Awq => "awq",
            Self::Fp8 => "fp8",
        }
    }
}

impl std::fmt::Display for QuantMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for QuantMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "gptq" => Ok(Self::Gptq),
            "awq" => Ok(Self::Awq),
            "fp8" | "compressed-tensors" | "compressed_tensors" => Ok(Self::Fp8),
            other => Err(format!(
                "unsupported quantization `{other}` (supported: gptq, awq, fp8, compressed-tensors)"
            )),
        }
    }
}

/// One checkpoint's quantization.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantConfig {
    Int4(Int4Config),
    Fp8(Fp8Config),
}

/// One checkpoint's int4 quantization (GPTQ, AWQ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Int4Config {
    pub method: QuantMethod,
    /// Inputs per group; `None` for one group over all inputs (`group_size: -1`).
    pub group_size: Option<usize>,
    /// GPTQ act-order: groups follow `g_idx`, not input order.
    pub desc_act: bool,
    /// GPTQ `sym` (the zero points are all 8 then; they are read from `qzeros` either way).
    pub sym: bool,
    /// Added to each stored zero point: 1 for GPTQ v1 checkpoints (which store zero − 1),
    /// 0 for `gptq_v2` and AWQ.
    pub zero_offset: u8,
}

impl QuantConfig {
    /// The `quantization_config` of config.json at `path`; `None` when it has none.
    pub fn from_config_file(path: &Path) -> Result<Option<Self>> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::InvalidConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_config(&value, path)
    }

    /// The quantization of the checkpoint whose safetensors shards are `weights`: the
    /// config.json beside the first shard (a Hugging Face directory or hub snapshot keeps
    /// them together); `None` without one.
    pub fn beside(weights: &[PathBuf]) -> Result<Option<Self>> {
        let Some(config) = weights
            .first()
            .and_then(|w| w.parent())
            .map(|d| d.join("config.json"))
            .filter(|c| c.is_file())
        else {
            return Ok(None);
        };
        Self::from_config_file(&config)
    }

    /// From a parsed config.json (`path` names it in errors).
    pub fn from_config(config: &Value, path: &Path) -> Result<Option<Self>> {
        let Some(q) = config.get("quantization_config") else {
            return Ok(None);
        };
        if q.is_null() {
            return Ok(None);
        }
        let err = |reason: String| ModelError::Quantization {
            path: path.to_path_buf(),
            reason,
        };
        let method = match q.get("quant_method").and_then(Value::as_str) {
            Some(m) => m
                .parse::<QuantMethod>()
                .map_err(|e| err(format!("quantization_config.quant_method: {e}")))?,
            None => return Err(err("quantization_config.quant_method is missing".into())),
        };
        Ok(Some(match method {
            QuantMethod::Fp8 => Self::Fp8(Fp8Config::from_quantization_config(q).map_err(err)?),
            _ => Self::Int4(Int4Config::from_quantization_config(q, method).map_err(err)?),
        }))
    }

    pub fn method(&self) -> QuantMethod {
        match self {
            Self::Int4(c) => c.method,
            Self::Fp8(_) => QuantMethod::Fp8,
        }
    }

    /// The name memory reports and `/v1/models` show, e.g. `gptq-int4-g128`, `fp8-w8a8-channel`.
    pub fn label(&self) -> String {
        match self {
            Self::Int4(c) => c.label(),
            Self::Fp8(c) => c.label(),
        }
    }
}

impl Int4Config {
    /// From `quantization_config` (`q`) of a GPTQ or AWQ checkpoint; the error names the key.
    pub(crate) fn from_quantization_config(
        q: &Value,
        method: QuantMethod,
    ) -> std::result::Result<Self, String> {
        let err = |reason: String| reason;
        type Result<T> = std::result::Result<T, String>;
        let int = |keys: &[&str]| -> Option<i64> {
            keys.iter().find_map(|k| q.get(*k)).and_then(Value::as_i64)
        };
        let flag = |key: &str, default: bool| -> Result<bool> {
            match q.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(err(format!(
                    "quantization_config.{key} = {other}: expected true or false"
                ))),
            }
        };
        match int(&["bits", "w_bit"]) {
            Some(4) => {}
            Some(b) => {
                return Err(err(format!(
                    "quantization_config.bits = {b}: only 4-bit {method} is supported"
                )));
            }
            None => return Err(err("quantization_config.bits is missing".into())),
        }
        let group_size = match int(&["group_size", "q_group_size"]) {
            Some(-1) => None,
            Some(g) if g > 0 && g % 8 == 0 => Some(g as usize),
            Some(g) => {
                return Err(err(format!(
                    "quantization_config.group_size = {g}: expected -1 or a positive multiple of 8"
                )));
            }
            None if method == QuantMethod::Gptq => Some(128),
            None => return Err(err("quantization_config.group_size is missing".into())),
        };
        let mut cfg = Self {
            method,
            group_size,
            desc_act: false,
            sym: true,
            zero_offset: 0,
        };
        match method {
            QuantMethod::Gptq => {
                cfg.desc_act = flag("desc_act", false)?;
                cfg.sym = flag("sym", true)?;
                if flag("is_marlin_format", false)? {
                    return Err(err(
                        "quantization_config.is_marlin_format = true: Marlin-repacked GPTQ is not supported".into(),
                    ));
                }
                cfg.zero_offset = match q.get("checkpoint_format").and_then(Value::as_str) {
                    None | Some("gptq") => 1,
                    Some("gptq_v2") => 0,
                    Some(other) => {
                        return Err(err(format!(
                            "quantization_config.checkpoint_format = {other:?}: supported: gptq, gptq_v2"
                        )));
                    }
                };
            }
            QuantMethod::Awq => {
                match q.get("version").and_then(Value::as_str) {
                    None => {}
                    Some(v) if v.eq_ignore_ascii_case("gemm") => {}
                    Some(v) => {
                        return Err(err(format!(
                            "quantization_config.version = {v:?}: only AWQ's GEMM layout is supported"
                        )));
                    }
                }
                if !flag("zero_point", true)? {
                    return Err(err(
                        "quantization_config.zero_point = false: only AWQ with zero points is supported".into(),
                    ));
                }
                cfg.sym = false;
            }
            QuantMethod::Fp8 => return Err(err("fp8 is not an int4 method".into())),
        }
        Ok(cfg)
    }

    /// The name memory reports and `/v1/models` show, e.g. `gptq-int4-g128`
    /// (`-gchannel` for one group per output channel).
    pub fn label(&self) -> String {
        label(self.method, self.group_size)
    }
}

pub(crate) fn label(method: QuantMethod, group_size: Option<usize>) -> String {
    match group_size {
        Some(g) => format!("{method}-int4-g{g}"),
        None => format!("{method}-int4-gchannel"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Option<QuantConfig>> {
        let v: Value = serde_json::from_str(&format!(r#"{{"quantization_config": {q}}}"#)).unwrap();
        QuantConfig::from_config(&v, Path::new("config.json"))
    }

    fn message(q: &str) -> String {
        parse(q).unwrap_err().to_string()
    }

    fn int4(q: &str) -> Int4Config {
        match parse(q).unwrap().unwrap() {
            QuantConfig::Int4(c) => c,
            other => panic!("not int4: {other:?}"),
        }
    }

    #[test]
    fn reads_optimum_gptq_and_autoawq_configs() {
        let g = int4(
            r#"{"bits": 4, "group_size": 128, "damp_percent": 0.1, "desc_act": true,
                "static_groups": false, "sym": true, "true_sequential": true,
                "model_name_or_path": null, "model_file_base_name": "model",
                "quant_method": "gptq"}"#,
        );
        assert_eq!(g.method, QuantMethod::Gptq);
        assert_eq!(g.group_size, Some(128));
        assert!(g.desc_act && g.sym);
        assert_eq!(g.zero_offset, 1);
        assert_eq!(g.label(), "gptq-int4-g128");
        let v2 = int4(
            r#"{"bits": 4, "group_size": -1, "quant_method": "gptq", "checkpoint_format": "gptq_v2"}"#,
        );
        assert_eq!((v2.group_size, v2.zero_offset), (None, 0));
        assert_eq!(v2.label(), "gptq-int4-gchannel");
        let a = int4(
            r#"{"bits": 4, "group_size": 128, "modules_to_not_convert": null,
                "quant_method": "awq", "version": "gemm", "zero_point": true}"#,
        );
        assert_eq!(a.method, QuantMethod::Awq);
        assert_eq!((a.group_size, a.zero_offset), (Some(128), 0));
        assert_eq!(a.label(), "awq-int4-g128");
        let none: Value = serde_json::from_str(r#"{"hidden_size": 8}"#).unwrap();
        assert!(
            QuantConfig::from_config(&none, Path::new("c"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn unsupported_settings_are_errors_naming_the_key() {
        let m = message(r#"{"bits": 8, "group_size": 128, "quant_method": "gptq"}"#);
        assert!(m.contains("quantization_config.bits = 8"), "{m}");
        let m = message(r#"{"quant_method": "bitsandbytes"}"#);
        assert!(
            m.contains("quant_method")
                && m.contains("bitsandbytes")
                && m.contains("gptq, awq, fp8"),
            "{m}"
        );
        let m =
            message(r#"{"bits": 4, "group_size": 128, "quant_method": "awq", "version": "gemv"}"#);
        assert!(m.contains("quantization_config.version"), "{m}");
        let m = message(
            r#"{"bits": 4, "group_size": 128, "quant_method": "awq", "zero_point": false}"#,
        );
        assert!(m.contains("zero_point"), "{m}");
        let m = message(r#"{"bits": 4, "group_size": 100, "quant_method": "gptq"}"#);
        assert!(m.contains("group_size = 100"), "{m}");
        let m = message(r#"{"bits": 4, "quant_method": "gptq", "checkpoint_format": "marlin"}"#);
        assert!(m.contains("checkpoint_format"), "{m}");
        assert!(message(r#"{"bits": 4}"#).contains("quant_method is missing"));
    }
}
