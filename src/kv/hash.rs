//! Content hashes of full blocks. A block's hash covers its own tokens and its parent's hash,
//! so equal hashes mean equal whole prefixes, not just equal blocks.

use std::hash::{Hash, Hasher};

/// 64-bit chained hash of a full block. (SipHash with fixed keys: deterministic across runs
/// and processes, so cache hit rates are reproducible.)
pub type BlockHash = u64;

pub fn hash_block_tokens(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    // DefaultHasher::new() is SipHash with fixed zero keys: the same in every process.
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_parent_and_tokens() {
        let a = hash_block_tokens(None, &[1, 2, 3]);
        assert_eq!(a, hash_block_tokens(None, &[1, 2, 3]));
        assert_ne!(a, hash_block_tokens(None, &[1, 2, 4]));
        assert_ne!(
            hash_block_tokens(Some(a), &[5]),
            hash_block_tokens(Some(a + 1), &[5])
        );
    }
}
