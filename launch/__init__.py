"""Entry points: the `vivit` CLI and the script the `deepspeed` launcher runs."""
