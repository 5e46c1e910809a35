"""Task and mixture registrations (imported as `mtf_switch.tasks`)."""
import mtf_switch  # noqa: F401  (TensorFlow compatibility shim first)
