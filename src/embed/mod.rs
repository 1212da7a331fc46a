//! Encoder models served beside the chat engine: sentence embeddings (/v1/embeddings) and
//! cross-encoder reranking (/v1/rerank). Each model has its own worker thread and queue;
//! the server sees only [`PoolingHandle`].

mod decoder;
mod handle;
mod load;
pub mod tokenize;
mod worker;

pub use decoder::decoder_embedding;
pub use handle::{
    PoolingError, PoolingHandle, PoolingInfo, PoolingOptions, PoolingStats, PoolingTask,
};
pub use load::{StartedPooling, is_encoder_model, split_name, start_pooling};
pub use tokenize::{EncodeError, EncoderTokenizer, Length};
