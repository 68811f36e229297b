"""nvhook: a policy gate between container engines and NVIDIA's container hook."""

__version__ = "0.1.0"
