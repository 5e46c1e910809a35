"""Training and evaluation on this host's CPU: meshes, the step graph, batches,
checkpoints, the loop and its actions, reports, greedy decoding, and the
main job (`python -m mtf_switch.training.train`, `mtf_switch_train`).
"""
