//! `dlm`: the command-line entry point. Subcommands are thin wiring over the library crates.

mod generate;
mod inspect;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use convert::{ConvertOptions, OutType};

#[derive(Parser)]
#[command(
    name = "dlm",
    version,
    about = "Block-diffusion language models on the CPU: convert, inspect, generate"
)]
struct Cli {
    /// Worker threads for the kernels [default: all cores].
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Decoding modes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Mode {
    /// Autoregressive: one token per forward.
    Ar,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face checkpoint directory (safetensors) to one GGUF file.
    Convert {
        /// The checkpoint directory (config.json, *.safetensors, tokenizer files).
        input: PathBuf,
        /// Output file [default: <input>/<name>-<outtype>.gguf].
        #[arg(long)]
        outfile: Option<PathBuf>,
        /// Type of the weight matrices: f32, f16, bf16, q8_0, tq1_0, tq2_0, i2_s.
        #[arg(long, default_value = "f16", value_parser = parse_outtype)]
        outtype: OutType,
        /// Ternarize a checkpoint that was not trained ternary (absmean rule; ruins an ordinary model).
        #[arg(long)]
        force_ternary: bool,
        /// general.name [default: the directory name].
        #[arg(long)]
        name: Option<String>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Generate text with a GGUF model; streams to stdout, speeds to stderr.
    Generate {
        /// The GGUF model.
        #[arg(short, long, default_value = "models/stories260K.gguf")]
        model: PathBuf,
        /// Raw text prompt (only the model's own BOS rule is applied). Without -p or --chat the
        /// prompt is the BOS token alone.
        #[arg(short, long)]
        prompt: Option<String>,
        /// A user message, rendered with the model's chat template.
        #[arg(long)]
        chat: Option<String>,
        /// A system message for --chat.
        #[arg(long)]
        system: Option<String>,
        /// Maximum new tokens.
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// Sampling temperature; 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Top-k (0 = off).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Top-p (1 = off).
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Min-p (0 = off).
        #[arg(long, default_value_t = 0.0)]
        min_p: f32,
        /// Repetition penalty (1 = off).
        #[arg(long, default_value_t = 1.0)]
        repeat_penalty: f32,
        /// RNG seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Stop strings (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        /// Decoding mode.
        #[arg(long, value_enum, default_value = "ar")]
        mode: Mode,
        /// Print prompt ids, generated ids, text and statistics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of a text (no BOS unless --bos).
    Tokenize {
        /// The GGUF model.
        #[arg(short, long, default_value = "models/stories260K.gguf")]
        model: PathBuf,
        /// The text.
        text: String,
        /// Prepend BOS.
        #[arg(long)]
        bos: bool,
        /// Print JSON with ids and token strings.
        #[arg(long)]
        json: bool,
    },
    /// Describe a GGUF file: architecture, DLM settings, tensors, size.
    Inspect {
        /// The GGUF file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_outtype(s: &str) -> Result<OutType, String> {
    OutType::parse(s).ok_or_else(|| {
        let names: Vec<&str> = OutType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown outtype `{s}`; choose one of {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global() {
            eprintln!("error: cannot start {n} threads: {e}");
            return ExitCode::from(2);
        }
    }
    let result = match cli.command {
        Command::Convert {
            input,
            outfile,
            outtype,
            force_ternary,
            name,
            quiet,
        } => {
            let opts = ConvertOptions {
                input,
                output: outfile,
                outtype,
                force_ternary,
                name,
                progress: !quiet,
            };
            convert::convert(&opts)
                .map_err(|e| e.to_string())
                .map(|report| {
                    for note in &report.fallbacks {
                        eprintln!("warning: {note}");
                    }
                    let dlm = match (report.mask_token_id, report.block_size) {
                        (Some(m), Some(b)) => format!(", DLM: mask token {m}, block size {b}"),
                        (Some(m), None) => format!(", DLM: mask token {m}"),
                        _ => String::new(),
                    };
                    eprintln!(
                        "wrote {} ({}, {} tensors, {:.2} MiB{dlm})",
                        report.output.display(),
                        report.arch,
                        report.n_tensors,
                        report.file_bytes as f64 / (1024.0 * 1024.0)
                    );
                })
        }
        Command::Generate {
            model,
            prompt,
            chat,
            system,
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
            stop,
            mode: Mode::Ar,
            json,
        } => {
            let sampling = generate::sampling(temperature, top_k, top_p, min_p, repeat_penalty, seed);
            let params = engine::GenerateParams { max_tokens, stop, sampling };
            generate::generate(&model, generate::GenerateArgs { prompt, chat, system, params, json })
        }
        Command::Tokenize { model, text, bos, json } => generate::tokenize(&model, &text, bos, json),
        Command::Inspect { file, json } => inspect::run(&file, json).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
