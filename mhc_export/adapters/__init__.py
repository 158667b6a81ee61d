"""Adapters that route other libraries' mHC models through the ``mhc::*`` ops.

``hf_deepseek_v4``: HF transformers' DeepSeek-V4 (``transformers >= 5.23``).
``hf_deepseek_v41``: DeepSeek-V4.1's name mapping and attributes (no transformers release
ships ``deepseek_v41`` yet; ``--hf`` says so).
"""
