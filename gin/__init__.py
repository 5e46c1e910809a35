"""gin configs of mtf_switch, found by name once mtf_switch is imported."""
