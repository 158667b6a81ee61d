#!/usr/bin/env python3
"""Export and validate one decoder layer at DeepSeek-V4-Flash width on this CPU machine.

    python scripts/dev/hf_flash_slice.py [WORKDIR]

Writes a random 2-layer V4-Flash-width checkpoint (8 experts; bf16 on disk),
then runs ``mhc-export export --hf CKPT --layers 0:1`` (float32) under
/usr/bin/time -v and prints its wall time and peak memory.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mhc_export.adapters.hf_testing import FLASH_SLICE, make_config, save_random_checkpoint

work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="hf_flash_"))
ckpt = work / "ckpt"
if not (ckpt / "config.json").is_file():
    t0 = time.perf_counter()
    save_random_checkpoint(ckpt, make_config(**FLASH_SLICE), dtype=torch.bfloat16,
                           max_shard_size="2GB")
    print(f"checkpoint written in {time.perf_counter() - t0:.1f}s to {ckpt}", flush=True)
cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "mhc_export", "export", "--hf", str(ckpt),
       "--layers", "0:1", "--out", str(work / "flash_layer0.onnx"), "--seq", "16", "--batch", "1"]
print(" ".join(cmd), flush=True)
sys.exit(subprocess.call(cmd))
