"""Studies: models x seeds trained alike, their curves, summaries and plots
(`python -m mtf_switch.studies.run_study`, `mtf_switch_study`).
"""
