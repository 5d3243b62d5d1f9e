//! Fast-dLLM v2 supervised fine-tuning on candle: turns an autoregressive checkpoint into a
//! block-diffusion LM (mask token, complementary masks, block attention, response-only loss).

pub mod checkpoint;
pub mod columns;
pub mod config;
pub mod data;
pub mod dataset;
pub mod error;
pub mod export;
pub mod loss;
pub mod model;
pub mod optim;
pub mod parquet_rows;
pub mod plot;
pub mod recipe;
pub mod trainer;

pub use error::{Result, TrainError};
