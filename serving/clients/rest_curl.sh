#!/usr/bin/env bash
# The calls of rest_client.py as curl lines. They work unchanged against
# TensorFlow Serving (Docker or tensorflow_model_server) and `tfcv serve`.
#
#   bash serving/clients/rest_curl.sh            # localhost:8501, model "digits"
#   HOST=127.0.0.1:9001 MODEL=mnist bash serving/clients/rest_curl.sh
set -euo pipefail

HOST=${HOST:-localhost:8501}
MODEL=${MODEL:-digits}
URL="http://${HOST}/v1/models/${MODEL}"

# The first digit of scikit-learn's digits (a 0), scaled to [0, 1]: shape (8, 8, 1).
DIGIT='[[[0.0],[0.0],[0.3125],[0.8125],[0.5625],[0.0625],[0.0],[0.0]],[[0.0],[0.0],[0.8125],[0.9375],[0.625],[0.9375],[0.3125],[0.0]],[[0.0],[0.1875],[0.9375],[0.125],[0.0],[0.6875],[0.5],[0.0]],[[0.0],[0.25],[0.75],[0.0],[0.0],[0.5],[0.5],[0.0]],[[0.0],[0.3125],[0.5],[0.0],[0.0],[0.5625],[0.5],[0.0]],[[0.0],[0.25],[0.6875],[0.0],[0.0625],[0.75],[0.4375],[0.0]],[[0.0],[0.125],[0.875],[0.3125],[0.625],[0.75],[0.0],[0.0]],[[0.0],[0.0],[0.375],[0.8125],[0.625],[0.0],[0.0],[0.0]]]'

echo "# version status"
curl -sS "${URL}"
echo
echo "# signatures"
curl -sS "${URL}/metadata"
echo
echo "# serving_default, row format: {\"predictions\": [[p0, ..., p9]]}"
curl -sS -X POST "${URL}:predict" -H 'Content-Type: application/json' \
  -d "{\"instances\": [${DIGIT}]}"
echo
echo "# predict_randomized, columnar format: {\"outputs\": {\"mean\", \"std\", \"predictive_entropy\", \"agreement\"}}"
curl -sS -X POST "${URL}:predict" -H 'Content-Type: application/json' \
  -d "{\"signature_name\": \"predict_randomized\", \"inputs\": [${DIGIT}]}"
echo
echo "# a specific version (use /labels/<label> for a version label of models.config)"
curl -sS -X POST "${URL}/versions/1:predict" -H 'Content-Type: application/json' \
  -d "{\"instances\": [${DIGIT}]}"
echo
