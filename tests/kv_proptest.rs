//! Property tests of the block allocator: random sequences of allocate / free / fork /
//! prefix-hit operations never double-free, leak, or hand out a block in use, and freeing
//! everything returns every block.

use indus::kv::{KvCacheManager, SeqId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// New sequence with a prompt drawn from a small alphabet (so prefixes repeat).
    Start {
        prompt_len: usize,
        alphabet: u32,
    },
    /// Grow a live sequence by `n` tokens.
    Grow {
        pick: usize,
        n: usize,
    },
    Free {
        pick: usize,
    },
    Fork {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..40, 1u32..4).prop_map(|(prompt_len, alphabet)| Op::Start {
            prompt_len,
            alphabet
        }),
        (any::<usize>(), 1usize..10).prop_map(|(pick, n)| Op::Grow { pick, n }),
        any::<usize>().prop_map(|pick| Op::Free { pick }),
        any::<usize>().prop_map(|pick| Op::Fork { pick }),
    ]
}

struct Live {
    id: SeqId,
    tokens: Vec<u32>,
    computed: usize,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn allocator_never_leaks_or_double_allocates(
        ops in proptest::collection::vec(op(), 1..120),
        num_blocks in 4usize..48,
        block_size in 1usize..6,
        prefix_caching in any::<bool>(),
    ) {
        let mut kv = KvCacheManager::new(num_blocks, block_size, prefix_caching);
        let mut live: Vec<Live> = Vec::new();
        let mut next_id: SeqId = 0;
        for op in ops {
            match op {
                Op::Start { prompt_len, alphabet } => {
                    let tokens: Vec<u32> = (0..prompt_len as u32).map(|i| (i * 7) % alphabet).collect();
                    let hits = kv.cached_prefix(&tokens);
                    prop_assert!(hits.len() * block_size < tokens.len());
                    let computed = hits.len() * block_size;
                    let id = next_id;
                    next_id += 1;
                    if kv.allocate(id, &tokens, computed, tokens.len() - computed, &hits).is_ok() {
                        live.push(Live { id, computed: tokens.len(), tokens });
                    } else {
                        prop_assert!(!kv.has_blocks(id), "failed allocation left blocks");
                    }
                }
                Op::Grow { pick, n } if !live.is_empty() => {
                    let i = pick % live.len();
                    let s = &mut live[i];
                    let new: Vec<u32> = (0..n as u32).map(|t| t % 3).collect();
                    let mut tokens = s.tokens.clone();
                    tokens.extend(&new);
                    if kv.allocate(s.id, &tokens, s.computed, n, &[]).is_ok() {
                        s.tokens = tokens;
                        s.computed += n;
                    }
                }
                Op::Free { pick } if !live.is_empty() => {
                    let s = live.swap_remove(pick % live.len());
                    kv.free(s.id);
                }
                Op::Fork { pick } if !live.is_empty() => {
                    let p = &live[pick % live.len()];
                    let shared = (p.computed / block_size) * block_size;
                    let id = next_id;
                    next_id += 1;
                    kv.fork(p.id, id, shared);
                    live.push(Live { id, tokens: p.tokens[..shared].to_vec(), computed: shared });
                }
                _ => {}
            }
            if let Err(e) = kv.check_invariants() {
                prop_assert!(false, "invariant broken: {}", e);
            }
            // Every live sequence has exactly the blocks its tokens need.
            for s in &live {
                prop_assert_eq!(kv.block_table(s.id).len(), s.computed.div_ceil(block_size));
            }
        }
        for s in live.drain(..) {
            kv.free(s.id);
        }
        prop_assert_eq!(kv.num_free_blocks(), num_blocks);
        if let Err(e) = kv.check_invariants() {
            prop_assert!(false, "invariant broken at the end: {}", e);
        }
    }
}
