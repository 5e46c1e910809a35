#!/usr/bin/env bash
# The first command: trains Switch-32 and its FLOP-matched dense twin side by
# side (studies/switch_vs_dense.gin: one seed, the same data in the same
# order, the offline code corpus), printing progress, then both models'
# results in one table; the curves go to
# runs/switch_vs_dense/results/validation.png.  A rerun resumes: finished
# runs are kept, an unfinished one goes on from its last checkpoint.  Extra
# arguments go to `python -m mtf_switch.studies.run_study` (mtf_switch_study).
# One model alone, the main job: `bash scripts/train.sh`.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m mtf_switch.studies.run_study --study studies/switch_vs_dense.gin \
    --work_dir runs --results_dir runs/switch_vs_dense/results "$@"
