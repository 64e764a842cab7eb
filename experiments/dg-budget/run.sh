#!/usr/bin/env bash
# MetaPrompt on the official DG protocol at its official 6 epochs and at 60 (10x the steps), seed 1,
# every target of both DG benchmarks; two runs at a time, one thread each. Writes results.jsonl
# (one JSON line per run). About 30 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
out=results.jsonl
: > "$out"
jobs=()
for epochs in 6 60; do
  for pair in emoji-pacs:photo emoji-pacs:art emoji-pacs:cartoon emoji-pacs:sketch \
              flags-dg:rectangle flags-dg:circle flags-dg:pixel flags-dg:emoji; do
    jobs+=("${pair%%:*} ${pair##*:} $epochs")
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P 2 -L 1 sh -c '
  result=$(metaprompt-lite train --method metaprompt --dataset "$0" --target "$1" --epochs "$2" --seed 1 \
           --out-dir "" --json 2>/dev/null | tail -n 1)
  printf "{\"benchmark\": \"%s\", \"target\": \"%s\", \"epochs\": %s, \"result\": %s}\n" "$0" "$1" "$2" "$result" >> results.jsonl'
