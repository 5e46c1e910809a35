#!/usr/bin/env bash
# The main job: trains one model (by default the tiny Switch model of
# models/switch_tiny.gin) on CPU, printing loss and routing metrics.  Extra
# arguments go to `python -m mtf_switch.training.train` (mtf_switch_train).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m mtf_switch.training.train "$@"
