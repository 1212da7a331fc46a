//! The GGUF reader on hostile bytes: any truncation, any corrupted byte, any claimed count —
//! an error naming the file or a parsed file, never a panic or a huge allocation.

use indus_models::gguf::GgufFile;
use indus_models::gguf::MetaValue;
use indus_models::gguf::reader::writer::{RawTensor, write};
use proptest::prelude::*;
use std::path::Path;

fn sample() -> Vec<u8> {
    let data: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    write(
        &[
            (
                "general.architecture".into(),
                MetaValue::Str("llama".into()),
            ),
            ("llama.block_count".into(), MetaValue::U32(1)),
            (
                "tokenizer.ggml.tokens".into(),
                MetaValue::Array(vec![
                    MetaValue::Str("a".into()),
                    MetaValue::Str("bc".into()),
                ]),
            ),
            (
                "tokenizer.ggml.scores".into(),
                MetaValue::Array(vec![MetaValue::F32(0.0), MetaValue::F32(-1.0)]),
            ),
        ],
        &[RawTensor {
            name: "token_embd.weight".into(),
            shape: vec![2, 32],
            type_id: 0,
            data,
        }],
    )
}

/// Parses `bytes`; `Err` only when the outcome is wrong: an error that does not name the file.
fn parse(bytes: Vec<u8>) -> Result<(), String> {
    match GgufFile::from_bytes(Path::new("fuzz.gguf"), bytes) {
        Ok(f) => {
            // Whatever parsed must be readable without panics.
            for info in f.tensors().values() {
                let _ = f.tensor_bytes(info).len();
            }
            Ok(())
        }
        Err(e) if e.to_string().contains("fuzz.gguf") => Ok(()),
        Err(e) => Err(format!("error does not name the file: {e}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn truncated_files_never_panic(cut in 0usize..2000) {
        let bytes = sample();
        let cut = cut.min(bytes.len());
        prop_assert_eq!(parse(bytes[..cut].to_vec()), Ok(()));
    }

    #[test]
    fn corrupted_bytes_never_panic(edits in proptest::collection::vec((0usize..400, any::<u8>()), 1..8)) {
        let mut bytes = sample();
        for (at, v) in edits {
            let at = at % bytes.len();
            bytes[at] = v;
        }
        prop_assert_eq!(parse(bytes), Ok(()));
    }

    #[test]
    fn any_claimed_count_is_checked_before_allocating(count in any::<u64>(), field in 0usize..2) {
        let mut bytes = sample();
        // Offsets 8 and 16: tensor count, metadata count (u64 each, GGUF v3).
        let at = 8 + 8 * field;
        bytes[at..at + 8].copy_from_slice(&count.to_le_bytes());
        prop_assert_eq!(parse(bytes), Ok(()));
    }
}
