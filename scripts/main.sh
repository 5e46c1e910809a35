#!/usr/bin/env bash
# The main job: trains a tiny Switch model on CPU, printing loss and routing
# metrics. Extra arguments go to `python -m mtf_switch.training.train`.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m mtf_switch.training.train "$@"
