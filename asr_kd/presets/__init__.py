"""Shipped presets (TOML files; each lists only what differs from asr_kd.config's defaults)."""
