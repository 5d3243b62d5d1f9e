//! `dlm`: the command-line entry point. Subcommands are thin wiring over the library crates.

mod bench;
mod generate;
mod inspect;
mod train_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use convert::{ConvertOptions, HeadTypes, OutType, Target};
use gguf::GgmlType;

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

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face checkpoint directory (safetensors) to one GGUF file.
    Convert {
        /// The checkpoint directory (config.json, *.safetensors, tokenizer files), or a Hub
        /// repository `hf://org/repo[@revision][/folder]` (only the files needed are fetched).
        input: PathBuf,
        /// Output file [default: <input>/<name>-<outtype>.gguf; for hf:// in the current
        /// directory].
        #[arg(long)]
        outfile: Option<PathBuf>,
        /// Type of the weight matrices: f32, f16, bf16, q8_0, tq1_0, tq2_0, i2_s.
        #[arg(long, default_value = "f16", value_parser = parse_outtype)]
        outtype: OutType,
        /// The engine the file is for: llama.cpp or bitnet.cpp. It decides BitNet b1.58's
        /// architecture name (`bitnet` / `bitnet-b1.58`); dlm reads both. [default: llama.cpp
        /// for tq1_0/tq2_0, bitnet.cpp otherwise]
        #[arg(long, value_parser = Target::parse)]
        target: Option<Target>,
        /// Type of the embedding table (token_embd): f32, f16, bf16, q8_0, q6_k, q4_0 [default:
        /// follows --outtype: f32/bf16/q8_0 as given, else f16]. q6_k needs a hidden size that
        /// is a multiple of 256 (else the table falls back to f16, reported).
        #[arg(long, value_parser = HeadTypes::parse_type)]
        token_embedding_type: Option<GgmlType>,
        /// Type of the LM head (output.weight), same choices; for a model with tied embeddings
        /// the head is then written as its own tensor. The head is read whole for every token:
        /// q8_0 halves an f16 head's bytes, q6_k (6.56 bits per weight) takes 41 % of them.
        #[arg(long, alias = "output-tensor-type", value_parser = HeadTypes::parse_type)]
        output_type: Option<GgmlType>,
        /// Ternarize a checkpoint that was not trained ternary (absmean rule; ruins an ordinary model).
        #[arg(long)]
        force_ternary: bool,
        /// Append an (untrained) |<MASK>| token when the checkpoint has none, to exercise block
        /// diffusion on an ordinary model; it does not make the model a trained DLM.
        #[arg(long)]
        add_mask_token: bool,
        /// general.name [default: the directory name; for hf:// the repository or folder name].
        #[arg(long)]
        name: Option<String>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Serve a model over the OpenAI API (the same program as `dlm_server`).
    Serve(server::ServeArgs),
    /// Generate text with a GGUF model; streams to stdout, speeds to stderr.
    Generate(generate::GenerateCmd),
    /// Measure autoregressive vs block-diffusion decoding on a prompt set.
    Bench(bench::BenchCmd),
    /// Print the token ids of a text (no BOS unless --bos).
    Tokenize {
        /// The GGUF model, a path or `hf://org/repo[:QUANT]` [default: the bundled demo model].
        #[arg(short, long)]
        model: Option<PathBuf>,
        /// The text.
        text: String,
        /// Prepend BOS.
        #[arg(long)]
        bos: bool,
        /// Print JSON with ids and token strings.
        #[arg(long)]
        json: bool,
    },
    /// Convert a Hugging Face checkpoint into a block-diffusion LM (Fast-dLLM v2 SFT):
    /// `dlm train model=smollm2_135m source.path=DIR conversion.total_tokens=100000000`.
    Train(train_cmd::TrainCmd),
    /// Check a `dlm train` output directory and compare AR and block-diffusion decoding on it.
    Validate(train_cmd::ValidateCmd),
    /// Describe a GGUF file: architecture, DLM settings, tensors, size.
    Inspect {
        /// The GGUF file, a path or `hf://org/repo[/FILE.gguf|:QUANT]`.
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
    if let Command::Serve(args) = cli.command {
        // The server builds its own kernel pool and async runtime.
        server::init_logging();
        return match server::serve(args, cli.threads) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
        };
    }
    // One pool for the whole command, entered once: the main thread is one of its workers, so
    // each matmul does not pay for waking the pool from outside.
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads.unwrap_or(0))
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("error: cannot start the worker threads: {e}");
            return ExitCode::from(2);
        }
    };
    let result = pool.install(|| run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Convert {
            input,
            outfile,
            outtype,
            target,
            token_embedding_type,
            output_type,
            force_ternary,
            add_mask_token,
            name,
            quiet,
        } => {
            // A Hub source converts into the current directory under the repository's name
            // (the snapshot directory is named by its commit and belongs to the cache).
            let (output, name) = if hub::is_hub(&input) {
                let spec =
                    hub::HubSource::parse(&input.to_string_lossy()).map_err(|e| e.to_string())?;
                let base = spec.path.rsplit('/').next().filter(|p| !p.is_empty());
                let name = name.unwrap_or_else(|| {
                    base.unwrap_or_else(|| spec.repo.rsplit('/').next().unwrap_or("model"))
                        .to_string()
                });
                let out = outfile
                    .unwrap_or_else(|| PathBuf::from(format!("{name}-{}.gguf", outtype.name())));
                (Some(out), Some(name))
            } else {
                (outfile, name)
            };
            let input = hub::resolve_quiet(&input, hub::Need::Checkpoint, quiet)
                .map_err(|e| e.to_string())?;
            let opts = ConvertOptions {
                input,
                output,
                outtype,
                target,
                head_types: HeadTypes {
                    token_embd: token_embedding_type,
                    output: output_type,
                },
                force_ternary,
                add_mask_token,
                name,
                progress: !quiet,
            };
            convert::convert(&opts)
                .map_err(|e| e.to_string())
                .map(|report| {
                    for note in report.fallbacks.iter().chain(&report.warnings) {
                        eprintln!("warning: {note}");
                    }
                    let dlm = match (report.mask_token_id, report.block_size) {
                        (Some(m), Some(b)) => format!(", DLM: mask token {m}, block size {b}"),
                        (Some(m), None) => format!(", DLM: mask token {m}"),
                        _ => String::new(),
                    };
                    // The target changes only BitNet's architecture name; say so where it did.
                    let arch = if report.arch.starts_with("bitnet") {
                        format!("{} for {}", report.arch, report.target)
                    } else {
                        report.arch.clone()
                    };
                    eprintln!(
                        "wrote {} ({arch}, {} tensors, {:.2} MiB{dlm})",
                        report.output.display(),
                        report.n_tensors,
                        report.file_bytes as f64 / (1024.0 * 1024.0)
                    );
                })
        }
        Command::Serve(_) => unreachable!("handled before the pool starts"),
        Command::Generate(cmd) => generate::generate(cmd),
        Command::Bench(cmd) => bench::bench(cmd),
        Command::Tokenize {
            model,
            text,
            bos,
            json,
        } => generate::tokenize(
            &hub::resolve(
                &model.unwrap_or_else(server::default_model_path),
                hub::Need::Gguf,
            )
            .map_err(|e| e.to_string())?,
            &text,
            bos,
            json,
        ),
        Command::Inspect { file, json } => {
            let file = hub::resolve(&file, hub::Need::Gguf).map_err(|e| e.to_string())?;
            inspect::run(&file, json).map_err(|e| e.to_string())
        }
        Command::Train(cmd) => train_cmd::run_train(cmd),
        Command::Validate(cmd) => train_cmd::run_validate(cmd),
    }
}
