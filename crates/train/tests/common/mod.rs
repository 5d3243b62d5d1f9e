//! Helpers shared by the training tests.

use std::path::{Path, PathBuf};

use train::data::DataTokenizer;

/// `../shared/fixtures` next to the repository, or `/work/shared/fixtures` where the checkout
/// lives elsewhere.
pub fn shared_fixtures() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("/work/shared/fixtures")
    }
}

/// The Fast-dLLM v2 tokenizer (vocab.json + merges.txt; tokenizer.json rebuilt by the converter
/// the way HF's Qwen2Converter does) with its tokenizer_config.json and chat_template.jinja.
pub fn fast_dllm_tokenizer() -> DataTokenizer {
    let dir = shared_fixtures().join("third-party/fast-dllm-v2-7b-tokenizer");
    let config = convert::checkpoint::read_json_opt(&dir.join("config.json"))
        .unwrap()
        .unwrap();
    let config = convert::checkpoint::JsonConfig::new("config.json", config).unwrap();
    let vocab = convert::vocab::load(&dir, 152064, &config, false).unwrap();
    let json = vocab
        .metadata
        .iter()
        .find(|(k, _)| k == convert::vocab::KEY_HF_JSON)
        .and_then(|(_, v)| v.as_str())
        .unwrap()
        .to_string();
    let tok: tokenizers::Tokenizer = json.parse().unwrap();
    let tok_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    let template = std::fs::read_to_string(dir.join("chat_template.jinja")).unwrap();
    DataTokenizer::new(tok, &tok_config, Some(&template)).unwrap()
}
