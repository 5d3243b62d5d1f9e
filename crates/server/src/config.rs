//! The server's command line: the seed's `dlm_server` flags plus limits and auth.

use std::path::PathBuf;
use std::time::Duration;

/// The bundled default model, relative to the repository root.
pub const DEFAULT_MODEL: &str = "models/stories260K-dlm.gguf";

/// The bundled model when it can be found: relative to the working directory, else to the
/// repository this binary was built from.
pub fn default_model_path() -> PathBuf {
    let here = PathBuf::from(DEFAULT_MODEL);
    if here.exists() {
        return here;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(DEFAULT_MODEL);
    if repo.exists() {
        repo
    } else {
        here
    }
}

/// Decoding modes a server or request may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeArg {
    /// Fast-dLLM v2 block diffusion (needs a mask token).
    Dlm,
    /// Autoregressive, one token per forward.
    Ar,
}

impl From<ModeArg> for engine::ModeChoice {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Dlm => engine::ModeChoice::Dlm,
            ModeArg::Ar => engine::ModeChoice::Ar,
        }
    }
}

/// Block-diffusion and mode flags, shared by every command that decodes (`dlm_server`,
/// `dlm generate`, `dlm bench`).
#[derive(clap::Args, Clone, Debug)]
pub struct DecodeArgs {
    /// Decoding mode [default: dlm when the model has a mask token, else ar].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Block size for block diffusion [default: the model's dlm.block_size, else 32].
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Sub-block size, decoded left to right inside a block.
    #[arg(long, default_value_t = 8)]
    pub small_block_size: usize,
    /// Commit every masked token whose probability exceeds this.
    #[arg(long, default_value_t = 0.95)]
    pub threshold: f32,
    /// The mask token id [default: tokenizer.ggml.mask_token_id, or a |<MASK>| token].
    #[arg(long)]
    pub mask_token_id: Option<u32>,
    /// Fast-dLLM's sub-block cache ("DualCache"): fewer rows per step, approximate.
    #[arg(long)]
    pub use_block_cache: bool,
}

impl DecodeArgs {
    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_size == Some(0) {
            return Err("--block-size must be positive".into());
        }
        if self.small_block_size == 0 {
            return Err("--small-block-size must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!(
                "--threshold must be in [0, 1], got {}",
                self.threshold
            ));
        }
        Ok(())
    }
}

/// The longest `--header-timeout`, `--body-timeout` or `--idle-timeout` accepted (one day).
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// `dlm_server` / `dlm serve` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// The GGUF model: a path, or `hf://org/repo[@revision][/FILE.gguf]` / `hf://org/repo:QUANT`
    /// (fetched into the Hugging Face cache) [default: the bundled demo model].
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 = any free port; the chosen one is logged).
    #[arg(long, default_value_t = 30000)]
    pub port: u16,
    /// Mode and block-diffusion settings (defaults for requests that do not set them).
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Requests decoded at the same time (each holds one KV cache).
    #[arg(long, default_value_t = 16)]
    pub max_concurrency: usize,
    /// Requests allowed to wait for a slot; more are refused with 429.
    #[arg(long, default_value_t = 64)]
    pub queue_size: usize,
    /// Context length per request [default: the model's].
    #[arg(long)]
    pub ctx_size: Option<usize>,
    /// Require `Authorization: Bearer KEY` on /v1 routes.
    #[arg(long, env = "DLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model id clients see and send [default: the file name without .gguf].
    #[arg(long)]
    pub model_alias: Option<String>,
    /// Sampling temperature when a request sends none (0 = greedy, the Fast-dLLM v2 default).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's headers, counted from their first byte; a
    /// slower client's connection is closed.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub header_timeout: f64,
    /// Seconds a client has to send a request's body once its headers are in; a slower one is
    /// answered 408 (`request_timeout`) and its connection closed.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub body_timeout: f64,
    /// Seconds a connection may stay open with no request in progress (before its first
    /// request or between keep-alive requests) before the server closes it.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub idle_timeout: f64,
    /// Open connections served at once; a connection beyond it is answered 503
    /// (`too_many_connections`) and closed [default: 4096, fewer if the open-file limit
    /// (`ulimit -n`, raised to its hard limit at startup) leaves less room].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Skip the startup measurement of what a block-diffusion step costs in decode steps.
    #[arg(long)]
    pub no_speed_probe: bool,
}

impl ServeArgs {
    /// The connection limits; `nofile` is the open-file limit the cap must fit in (see
    /// [`crate::conn::raise_open_file_limit`]). Call after [`ServeArgs::validate`].
    pub fn conn_limits(&self, nofile: Option<u64>) -> Result<crate::conn::ConnLimits, String> {
        Ok(crate::conn::ConnLimits {
            header_timeout: Duration::from_secs_f64(self.header_timeout),
            body_timeout: Duration::from_secs_f64(self.body_timeout),
            idle_timeout: Duration::from_secs_f64(self.idle_timeout),
            max_connections: crate::conn::connection_cap(self.max_connections, nofile)?,
        })
    }

    /// The model file to load.
    pub fn model_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_model_path)
    }

    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrency == 0 {
            return Err("--max-concurrency must be at least 1".into());
        }
        self.decode.validate()?;
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(format!(
                "--temperature must be in [0, 2], got {}",
                self.temperature
            ));
        }
        if self.ctx_size == Some(0) {
            return Err("--ctx-size must be positive".into());
        }
        for (flag, secs) in [
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--idle-timeout", self.idle_timeout),
        ] {
            if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
                return Err(format!(
                    "{flag} must be in (0, {MAX_TIMEOUT_SECS}] seconds, got {secs}"
                ));
            }
        }
        if self.max_connections == Some(0) {
            return Err("--max-connections must be at least 1".into());
        }
        if self.api_key.as_deref() == Some("") {
            return Err("--api-key / DLM_API_KEY is empty".into());
        }
        Ok(())
    }
}
