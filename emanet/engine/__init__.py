"""Training and evaluation machinery: devices, processes, optimisation, checkpoints."""
