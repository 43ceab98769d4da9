#!/usr/bin/env bash
# Builds benchmarks/.venv-peers: a separate virtual environment holding the peer
# libraries (neuraloperator 2.0.0, DeepXDE 1.15.0) beside the CPU torch 2.13.0 and
# an editable oplab. The peers are never dependencies of oplab itself.
#
#   bash benchmarks/setup_peers.sh            # from the repository root (or anywhere)
#
# torch is installed first and pinned through a constraints file for every later
# step, so no dependency can pull in another torch build; the script fails if the
# torch in the venv is not 2.13.0+cpu at the end.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv-peers"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

"$python" -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install --upgrade pip >/dev/null
"$pip" install "torch==2.13.0"
cons="$(mktemp)"
trap 'rm -f "$cons"' EXIT
echo "torch==2.13.0" > "$cons"
"$pip" install -c "$cons" "neuraloperator==2.0.0" "deepxde==1.15.0" onnx onnxscript onnxruntime
"$pip" install -c "$cons" -e "$root"

DDE_BACKEND=pytorch "$venv/bin/python" - <<'PY'
import torch, neuralop, deepxde, oplab
v = torch.__version__
print("torch", v, "| neuralop", getattr(neuralop, "__version__", "?"), "| deepxde", deepxde.__version__, "| oplab", oplab.__version__)
if not v.startswith("2.13.0") or torch.version.cuda is not None:
    raise SystemExit(f"expected torch 2.13.0 CPU in the peers venv, found {v}")
PY
