#!/usr/bin/env bash
# Makes the bundled demo DLM, models/stories260K-dlm.gguf, with our own pipeline:
#   1. self-distillation data: stories sampled from the original autoregressive stories260K,
#   2. `dlm train` (Fast-dLLM v2 SFT, the stories260k preset) on those plus the TinyStories sample,
#   3. `dlm convert` to GGUF,
#   4. `dlm bench` for the numbers recorded in models/README.md.
# Takes ~25 minutes on 2 cores (TRAIN_TOKENS sets the training budget; 3M by default).
set -euo pipefail
cd "$(dirname "$0")/.."

FIXTURE=${FIXTURE:-../shared/fixtures/stories260K}
[ -d "$FIXTURE" ] || FIXTURE=/work/shared/fixtures/stories260K
TRAIN_TOKENS=${TRAIN_TOKENS:-3000000}
SAMPLES=${SAMPLES:-4000}
WORK=${WORK:-output/demo}
OUT=models/stories260K-dlm.gguf

cargo build --release -p cli --bin dlm
DLM=target/release/dlm
mkdir -p "$WORK"

# 1. Self-distillation: the original model's own stories (temperature 0.8), one document each.
if [ ! -s "$WORK/distilled.txt" ]; then
  "$DLM" generate -m models/stories260K.gguf --samples "$SAMPLES" --temperature 0.8 \
      --max-tokens 256 --seed 1 --json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    text = json.loads(line)["text"].strip()
    if text:
        print(text.replace("\n\n", "\n") + "\n")' > "$WORK/distilled.txt.tmp"
  mv "$WORK/distilled.txt.tmp" "$WORK/distilled.txt"
fi
# Blank lines separate documents: the sample's paragraphs, then the distilled stories.
cat "$FIXTURE/tinystories_sample.txt" <(echo) "$WORK/distilled.txt" > "$WORK/data.txt"

# 2. Fast-dLLM v2 SFT: mask token added, complementary masks, block attention (bd_size 32).
rm -rf "$WORK/stories260K-dlm" "$WORK/stories260K-dlm.run"
"$DLM" train model=stories260k source.path="$FIXTURE" data.path="$WORK/data.txt" \
    output.path="$WORK/stories260K-dlm" training.seq_len=64 training.batch_size=16 \
    training.grad_accum=1 training.checkpoint_every=200 conversion.total_tokens="$TRAIN_TOKENS" seed=42
# llama2.c's stories end with BOS: stop on BOS as well as EOS.
python3 - "$WORK/stories260K-dlm/generation_config.json" <<'PY'
import json, sys
path = sys.argv[1]
cfg = json.load(open(path))
cfg["eos_token_id"] = [2, 1]
json.dump(cfg, open(path, "w"), indent=2)
PY
"$DLM" validate "$WORK/stories260K-dlm"

# 3. GGUF (F32: the model is tiny).
"$DLM" convert "$WORK/stories260K-dlm" --outfile "$OUT" --outtype f32 --name stories260K-dlm -q

# 4. Numbers for models/README.md.
printf '%s\n' '{"prompt": "Once upon a time"}' '{"prompt": "Lily and Ben went to the park."}' \
  '{"prompt": "Tom had a red ball."}' '{"prompt": "One day, a little bird"}' > "$WORK/prompts.jsonl"
"$DLM" bench -m "$OUT" --prompts "$WORK/prompts.jsonl" --max-tokens 128 --thresholds 1.0,0.9,0.7,0.5 | tee "$WORK/bench.md"
echo "wrote $OUT"
