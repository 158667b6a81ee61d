"""The DeepSeek-V4 checkpoint generator the tests use; it documents the published format.

The code lives in ``mhc_export/testing/v4_checkpoints.py`` (shared with the fuzzers
and scripts/hf_v4flash_layer.py); its docstring is the format: tensor names of
both layouts, which tensors are FP8 (128 x 128 UE8M0 or float32 block scales), FP4
(two E2M1 per byte, low nibble first, a scale per 32 values) or BF16/F32/I64, the
MTP block, sharding and the published config.json keys.

    python tests/v4_checkpoints.py OUT_DIR [--layout native|hf] [--weights fp8|bf16|fp32]
        [--experts fp4|fp8] [--scale-fmt ue8m0|float32] [--shards N] [--no-mtp]
        [--flash-header-only]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mhc_export.testing.v4_checkpoints import (
    V4_FLASH,
    flash_config,
    quant_fp4,
    quant_fp8,
    storage,
    write_checkpoint,
    write_real_layers,
)

__all__ = ["V4_FLASH", "flash_config", "quant_fp4", "quant_fp8", "storage",
           "write_checkpoint", "write_real_layers"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--layout", choices=("native", "hf"), default="native")
    p.add_argument("--weights", choices=("fp8", "bf16", "fp32"), default="fp8")
    p.add_argument("--experts", choices=("fp4", "fp8"), default="fp4")
    p.add_argument("--scale-fmt", choices=("ue8m0", "float32"), default="ue8m0")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--no-mtp", action="store_true")
    p.add_argument("--flash-header-only", action="store_true",
                   help="the real-size V4-Flash index: names, dtypes, shapes, no data")
    a = p.parse_args(argv)
    config = flash_config() if a.flash_header_only else None
    write_checkpoint(a.out, config, layout=a.layout, weights=a.weights, experts=a.experts,
                     scale_fmt=a.scale_fmt, shards=a.shards, mtp=not a.no_mtp,
                     header_only=a.flash_header_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
