use crate::kv::SeqId;
use std::sync::Arc;

/// Waiting order within a tenant: (priority, arrival, id).
pub(crate) type WaitKey = (i32, u64, SeqId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    Waiting,
    Running,
}

/// What the scheduler knows of a sequence: its tokens and how many are in the cache.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: SeqId,
    /// Prompt then generated tokens.
    pub tokens: Vec<u32>,
    pub num_prompt_tokens: usize,
    pub num_computed: usize,
    /// Lower runs first (as vLLM's `priority`); ties go to the earlier arrival.
    pub priority: i32,
    /// Monotonic admission order.
    pub arrival: u64,
    pub status: SeqStatus,
    /// Whose sequence this is (opaque to the scheduler; the server's API key name): waiting
    /// sequences are served round-robin across tenants.
    pub tenant: Arc<str>,
    pub num_preemptions: u32,
    pub(crate) prefix_lookup_recorded: bool,
}

impl Sequence {
    pub fn new(id: SeqId, prompt: Vec<u32>, priority: i32, arrival: u64) -> Self {
        Self {
            id,
            num_prompt_tokens: prompt.len(),
            tokens: prompt,
            num_computed: 0,
            priority,
            arrival,
            status: SeqStatus::Waiting,
            tenant: Arc::from(""),
            num_preemptions: 0,
            prefix_lookup_recorded: false,
        }
    }

    /// The same sequence on behalf of `tenant`.
    pub fn with_tenant(mut self, tenant: Arc<str>) -> Self {
        self.tenant = tenant;
        self
    }

    pub(crate) fn wait_key(&self) -> WaitKey {
        (self.priority, self.arrival, self.id)
    }

    pub fn num_generated(&self) -> usize {
        self.tokens.len() - self.num_prompt_tokens
    }

    pub fn is_prefilling(&self) -> bool {
        self.num_computed < self.num_prompt_tokens
    }
}
