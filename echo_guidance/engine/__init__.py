"""Training (DDP, mixed precision, checkpoints), evaluation (Table 1, Fig. 3) and ONNX export.

Submodules: ``config``, ``train``, ``checkpoint``, ``evaluate``, ``export``. Nothing is imported here
so that ``echo-guidance`` subcommand discovery stays light.
"""
