#!/usr/bin/env bash
# The README's eval table and freshness curves: every model on the three streams, then
# HR@10 against the export interval on MovieLens-100K and Amazon Beauty.
# JSON (git-ignored) and PNG land in benchmarks/results/. Data is read from
# $FRESHRANK_DATA_DIR (default: ../shared/data beside the checkout), never copied.
set -euo pipefail
cd "$(dirname "$0")/.."
# The runs of each table (and of each curve) go side by side, one process per CPU (--jobs).
models=popularity,static-mf,mf,static-din,din,static-sasrec,sasrec
for stream in ml-100k amazon-beauty synthetic; do
  freshrank eval --dataset "$stream" --models "$models" "$@"
done
freshrank eval --curve --dataset ml-100k --dataset amazon-beauty "$@"
