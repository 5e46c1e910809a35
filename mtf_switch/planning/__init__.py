"""Sizes and plans: parameter and FLOP counts (`mtf_switch_size`) and the
memory, all-to-all and step-time planner for a TPU slice (`mtf_switch_plan`).
"""
