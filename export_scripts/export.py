#!/usr/bin/env python3
"""Export an mHC model (default: the 'small' config) to ONNX and validate it.

    python export_scripts/export.py                  # small model -> engines/mhc_small_float32.onnx
    python export_scripts/export.py --config tiny --dtype float16
    python export_scripts/export.py --op pre --streams 4 --hidden 7168 --dtype bfloat16
    python export_scripts/export.py --hf CKPT_DIR [--layers A:B]   # HF DeepSeek-V4 (docs/HF.md)

Same options as ``mhc-export export``; ``--help`` lists them. Needs the package
importable: ``scripts/setup.sh`` installs it editable into ``.venv``.
"""

import sys

from mhc_export.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
