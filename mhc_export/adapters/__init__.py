"""Adapters that route other libraries' mHC models through the ``mhc::*`` ops.

``hf_deepseek_v4``: HF transformers' DeepSeek-V4 (``transformers >= 5.23``).
"""
