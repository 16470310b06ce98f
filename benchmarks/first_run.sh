#!/usr/bin/env bash
# Time the README's main job as a newcomer meets it: a clean clone, a fresh venv, the two-command
# install, then `unfold train recon` (default data generated on first use). Run on a quiet machine:
#   bash benchmarks/first_run.sh [WORK_DIR]
# Prints the install, data and training times; the clone and its venv stay in WORK_DIR.
set -euo pipefail
source_repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=${1:-$(mktemp -d)}
rm -rf "$work/repo" && git clone -q "$source_repo" "$work/repo" && cd "$work/repo"
python3 -m venv .venv && source .venv/bin/activate
start=$(date +%s)
pip install -q torch==2.13.0 && pip install -q -e .
installed=$(date +%s)
unfold train recon 2>&1 | tr '\r' '\n' | grep -v "it/s\|s/it\|ev/s" > "$work/train.log"
end=$(date +%s)
data_done=$(stat -c %Y data/ttbar_semileptonic_train.h5)
echo "install $((installed - start)) s, default data $((data_done - installed)) s, training and table $((end - data_done)) s, total $((end - start)) s"
tail -n 14 "$work/train.log"
