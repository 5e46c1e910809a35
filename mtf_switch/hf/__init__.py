"""Weights between mtf_switch and HuggingFace's SwitchTransformers, both ways
(`mtf_switch_export_hf`, `mtf_switch_import_hf`).
"""
