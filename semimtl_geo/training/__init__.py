"""The Lightning training engine and the per-method adversarial steps."""
