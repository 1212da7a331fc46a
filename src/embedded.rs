//! The embedded default model: `tests/fixtures/tiny-llama3` compiled into the binary, so
//! `indus serve` works on a fresh machine with no network and no model directory. It is a
//! tiny random-weight Llama-3.1-architecture model with the Llama 2 tokenizer: it exercises
//! every code path but writes gibberish. Serve a real model by naming it.

use std::path::PathBuf;

pub const NAME: &str = "indus-tiny-llama3-random";

const FILES: &[(&str, &[u8])] = &[
    (
        "config.json",
        include_bytes!("../tests/fixtures/tiny-llama3/config.json"),
    ),
    (
        "generation_config.json",
        include_bytes!("../tests/fixtures/tiny-llama3/generation_config.json"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../tests/fixtures/tiny-llama3/tokenizer.json"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../tests/fixtures/tiny-llama3/tokenizer_config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../tests/fixtures/tiny-llama3/model.safetensors"),
    ),
];

/// Writes the embedded files to a per-version cache directory (once) and returns it.
pub fn materialize() -> std::io::Result<PathBuf> {
    let base = std::env::var_os("INDUS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "indus-embedded-{}-{}",
        env!("CARGO_PKG_VERSION"),
        NAME
    ));
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in FILES {
        let path = dir.join(name);
        let fresh = std::fs::metadata(&path)
            .map(|m| m.len() == bytes.len() as u64)
            .unwrap_or(false);
        if !fresh {
            // Write then rename, so a concurrent start never reads a half-written file.
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
        }
    }
    Ok(dir)
}
