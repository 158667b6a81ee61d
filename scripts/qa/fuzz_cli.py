"""Fuzz the command line with bad input: every case must fail cleanly, at once, leaving nothing.

    python scripts/qa/fuzz_cli.py --count 1000 --seed 1            # every family
    python scripts/qa/fuzz_cli.py --count 200 --families hf,outputs

Each case takes a valid command of one subcommand (export of an op, of the
own model or of an HF checkpoint; validate; build; diagnose) and breaks one
thing: a size out of range, not a number or beyond memory; an unknown dtype
or attribute, or one outside its range; an output path (--out, --report,
--save-checkpoint, --json, --plot, the engine plan) that is a folder, lies
under a file or in a read-only folder; a corrupt, truncated or missing
checkpoint or ONNX file; an HF checkpoint, in save_pretrained or DeepSeek's
published layout (FP8 + UE8M0 scales, FP4 experts, MTP, sharded), broken as a
download can be (a shard cut short, an index entry or a weight's scale lost, a
shard missing, a dtype or a scale's shape changed in a header, a config.json
that disagrees with the weights, bad config JSON); flags that conflict or
would be ignored (bad --layers, --weights native below its opset); an opset
outside the exporter's range.

The command runs in-process (mhc_export.cli.main) with default outputs sent to
a temporary engines/ folder. A case passes when it exits with its expected
code (2; 3 where a TensorRT build is asked for and TensorRT is missing),
printed exactly one line on stderr, no traceback, and left no new file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from mhc_export.cli import main as cli_main
from mhc_export.core import preflight
from mhc_export.testing.v4_checkpoints import edit_header

ROOT = Path(__file__).resolve().parents[2]

BAD_SIZES = ["0", "-1", "9", "100", "abc", "1.5", ""]
HUGE = ["1000000000", "100000000", "4294967296"]
BAD_DTYPES = ["int8", "float64", "bf16x", "half2"]
BAD_OPSETS = ["0", "16", "17", "26", "99", "x"]
BAD_ATTRS = {
    "pre": ["sinkhorn_iters=0", "sinkhorn_iters=-3", "sinkhorn_iters=2.5", "rms_eps=-1",
            "pre_eps=nan", "post_mult=0", "post_mult=-2", "sinkhorn_eps=inf", "bogus=1",
            "rms_eps", "=3"],
    "head": ["eps=-0.1", "rms_eps=nan", "iters=3"],
    "sinkhorn": ["iters=0", "eps=-1", "eps=abc"],
}
OPS = [["--op", "pre", "--streams", "4", "--hidden", "16"],
       ["--op", "head", "--streams", "3", "--hidden", "8"],
       ["--op", "sinkhorn", "--streams", "2"]]
# config.json keys whose change alters some tensor's shape in the test checkpoint.
SHAPED_KEYS = {"hidden_size": [48, 96], "vocab_size": [50, 200], "moe_intermediate_size": [16],
               "n_routed_experts": [2, 8], "q_lora_rank": [16], "o_lora_rank": [8],
               "head_dim": [16, 64], "num_attention_heads": [2, 8], "hc_mult": [2, 3]}
EXPECTED = {2}
EXPECTED_TRT = {2, 3}  # a build without TensorRT exits 3 where the input is otherwise fine


class Fuzzer:
    """Fixtures (made once) and one case generator per family."""

    def __init__(self, tmp: Path, rnd: random.Random, with_hf: bool) -> None:
        self.tmp, self.rnd = tmp, rnd
        self.work = tmp / "cases"
        self.work.mkdir()
        (tmp / "file").write_text("not a folder")
        self.ro = tmp / "readonly"
        self.ro.mkdir()
        (self.ro / "existing.onnx").write_text("x")
        self.files: dict[str, Path] = {"file": tmp / "file"}
        self.note = ""  # what the last case broke, for the failure report
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            self._own_fixtures()
            if with_hf:
                self._hf_fixtures()
        _make_read_only(self.ro)
        self.families: dict[str, Callable[[], tuple[list[str], set[int]]]] = {
            "op": self.case_op, "model": self.case_model, "validate": self.case_validate,
            "build": self.case_build, "diagnose": self.case_diagnose,
            "outputs": self.case_outputs, "memory": self.case_memory,
        }
        if with_hf:
            self.families["hf"] = self.case_hf
            self.families["hf-flags"] = self.case_hf_flags
            self.families["hf-memory"] = self.case_hf_memory

    # -- fixtures ---------------------------------------------------------------------

    def _own_fixtures(self) -> None:
        f = self.files
        f["tiny"], f["ckpt"] = self.tmp / "tiny.onnx", self.tmp / "tiny.safetensors"
        assert cli_main(["export", "--config", "tiny", "--no-validate", "--out", str(f["tiny"]),
                         "--save-checkpoint", str(f["ckpt"])]) == 0
        f["op"] = self.tmp / "pre.onnx"
        assert cli_main(["export", *OPS[0], "--no-validate", "--out", str(f["op"])]) == 0
        from mhc_export.reference.checkpoint import save_checkpoint
        from mhc_export.reference.model import build_model

        f["small_ckpt"] = self.tmp / "small.safetensors"
        save_checkpoint(build_model("small", seed=1), f["small_ckpt"])

    def _hf_fixtures(self) -> None:
        from mhc_export.adapters.hf_testing import make_config, save_random_checkpoint

        cfg = dict(num_hidden_layers=1, layer_types=["sliding_attention"],
                   mlp_layer_types=["moe"])
        self.hf_sharded, self.hf_single = self.tmp / "hf_sharded", self.tmp / "hf_single"
        save_random_checkpoint(self.hf_sharded, make_config(**cfg), seed=1,
                               max_shard_size="100KB")
        save_random_checkpoint(self.hf_single, make_config(**cfg), seed=2)
        self.hf_other = self.tmp / "hf_other"
        save_random_checkpoint(self.hf_other, make_config(**{**cfg, "hidden_size": 96}), seed=3)
        self.hf_huge = _huge_checkpoint(self.tmp / "hf_huge")
        self._native_fixtures()
        self.files["hf_onnx"] = self.tmp / "hf.onnx"
        assert cli_main(["export", "--hf", str(self.hf_single), "--layers", "0:1",
                         "--no-validate", "--out", str(self.files["hf_onnx"])]) == 0

    def _native_fixtures(self) -> None:
        """DeepSeek's published layout (mhc_export/testing/v4_checkpoints.py): native names,
        FP8 weights with UE8M0 block scales, FP4 routed experts, the MTP block; sharded
        with an index, and one file with FP8 experts (the -Base releases)."""
        from mhc_export.adapters.hf_testing import make_config
        from mhc_export.testing.v4_checkpoints import write_checkpoint

        self.native_sharded = self.tmp / "native_sharded"
        write_checkpoint(self.native_sharded, make_config(), layout="native", shards=3, seed=4)
        self.native_single = self.tmp / "native_single"
        write_checkpoint(self.native_single, make_config(), layout="native", experts="fp8",
                         seed=5)

    # -- helpers ----------------------------------------------------------------------

    def case_dir(self) -> Path:
        d = self.work / f"c{self.rnd.randrange(1 << 40):x}"
        d.mkdir()
        return d

    def bad_path(self, name: str) -> tuple[Path, str]:
        """An output path that cannot be written, and how: a folder, under a file, read-only."""
        kind = self.rnd.choice(["folder", "under-file", "read-only", "read-only-new-dir"])
        if kind == "folder":
            d = self.case_dir() / name
            d.mkdir()
            return d, kind
        if kind == "under-file":
            return self.files["file"] / "sub" / name, kind
        if kind == "read-only":
            return self.ro / self.rnd.choice([name, "existing.onnx"]), kind
        return self.ro / "new" / name, kind

    def corrupt_file(self, path: Path) -> Path:
        kind = self.rnd.choice(["random", "empty", "truncated"])
        if kind == "random":
            path.write_bytes(self.rnd.randbytes(self.rnd.randint(1, 4096)))
        elif kind == "empty":
            path.write_bytes(b"")
        else:
            data = self.files[self.rnd.choice(["tiny", "ckpt", "op"])].read_bytes()
            path.write_bytes(data[: self.rnd.randint(1, len(data) - 1)])
        return path

    def out(self) -> list[str]:
        return ["--out", str(self.work / "out" / "m.onnx")]

    # -- families ---------------------------------------------------------------------

    def case_op(self) -> tuple[list[str], set[int]]:
        r = self.rnd
        base = ["export", *r.choice(OPS), "--no-validate"]
        op = base[2]
        kind = r.choice(["size", "dtype", "attr", "opset", "conflict"])
        if kind == "size":
            flag = r.choice(["--streams", "--tokens"] + ([] if op == "sinkhorn" else ["--hidden"]))
            if flag == "--tokens":
                base.remove("--no-validate")
            values = BAD_SIZES if flag == "--streams" else [v for v in BAD_SIZES
                                                            if v not in ("9", "100")]
            base = _set(base, flag, r.choice(values))
        elif kind == "dtype":
            base = _set(base, "--dtype", r.choice(BAD_DTYPES + (["bfloat16"] if op == "sinkhorn"
                                                                 else [])))
        elif kind == "attr":
            base += ["--attr", r.choice(BAD_ATTRS[op])]
        elif kind == "opset":
            base += ["--opset", r.choice(BAD_OPSETS)]
        else:
            base += r.choice([["--config", "small"], ["--batch", "2"], ["--seq", "3"],
                              ["--no-fuse"], ["--mode", "decomposed"], ["--seed", "1"],
                              ["--external-data", "always"], ["--layers", "0:1"],
                              ["--checkpoint", str(self.files["ckpt"])], ["--tokens", "3"]])
        return [*base, *self.out()], EXPECTED

    def case_model(self) -> tuple[list[str], set[int]]:
        r = self.rnd
        base = ["export", "--config", "tiny", "--no-validate"]
        kind = r.choice(["size", "dtype", "opset", "conflict", "checkpoint"])
        if kind == "size":
            flag = r.choice(["--batch", "--seq"])
            base = _set([a for a in base if a != "--no-validate"], flag,
                        r.choice([v for v in BAD_SIZES if v not in ("9", "100")]))
        elif kind == "dtype":
            base = _set(base, "--dtype", r.choice(BAD_DTYPES))
        elif kind == "opset":
            base += ["--opset", r.choice(BAD_OPSETS)]
        elif kind == "conflict":
            base += r.choice([["--streams", "3"], ["--hidden", "8"], ["--attr", "rms_eps=1"],
                              ["--mode", "decomposed", "--no-fuse"], ["--report", "r.json"],
                              ["--checkpoint", str(self.files["ckpt"])], ["--layers", "0:1"],
                              ["--config", "nope"], ["--external-data", "sometimes"]])
        else:
            which = r.choice(["corrupt", "missing", "folder", "onnx-as-ckpt"])
            bad = self.case_dir() / "bad.safetensors"
            path = {"corrupt": lambda: self.corrupt_file(bad), "missing": lambda: bad,
                    "folder": lambda: bad.parent, "onnx-as-ckpt": lambda: self.files["tiny"]
                    }[which]()
            return ["export", "--checkpoint", str(path), *self.out()], EXPECTED
        return [*base, *self.out()], EXPECTED

    def case_validate(self) -> tuple[list[str], set[int]]:
        r = self.rnd
        f = self.files
        kind = r.choice(["corrupt", "missing", "folder", "flags", "checkpoint", "memory",
                         "metadata", "engine"] + (["hf-checkpoint"] if "hf_onnx" in f else []))
        report = ["--report", str(self.work / "out" / "r.json")]
        if kind == "corrupt":
            return ["validate", "--onnx", str(self.corrupt_file(self.case_dir() / "b.onnx")),
                    *report], EXPECTED
        if kind == "missing":
            return ["validate", "--onnx", str(self.work / "none.onnx")], EXPECTED
        if kind == "folder":
            return ["validate", "--onnx", str(self.case_dir()), *report], EXPECTED
        if kind == "flags":
            return r.choice([
                ["validate", "--onnx", str(f["tiny"]), "--tokens", "3", *report],
                ["validate", "--onnx", str(f["op"]), "--batch", "2", *report],
                ["validate", "--onnx", str(f["op"]), "--checkpoint", str(f["ckpt"]), *report],
                ["validate", "--onnx", str(f["tiny"]), "--plugins", "x.so", *report],
                ["validate", "--onnx", str(f["tiny"]), "--seq", r.choice(["0", "-2", "x"])],
                ["validate", *report],
            ]), EXPECTED
        if kind == "checkpoint":
            bad = r.choice([f["small_ckpt"], self.case_dir(), self.work / "none.safetensors",
                            self.corrupt_file(self.case_dir() / "c.safetensors")])
            return ["validate", "--onnx", str(f["tiny"]), "--checkpoint", str(bad),
                    *report], EXPECTED
        if kind == "memory":
            flag = r.choice(["--seq", "--batch"]) if r.random() < 0.6 else "--tokens"
            target = f["op"] if flag == "--tokens" else f["tiny"]
            return ["validate", "--onnx", str(target), flag, r.choice(HUGE), *report], EXPECTED
        if kind == "metadata":
            return ["validate", "--onnx", str(self.broken_metadata()), *report], EXPECTED
        if kind == "engine":
            return ["validate", "--engine", str(r.choice([
                self.work / "none.plan", self.corrupt_file(self.case_dir() / "e.plan")])),
                    *report], EXPECTED_TRT
        other = r.choice([self.hf_other, self.case_dir(), self.work / "nowhere"])
        return ["validate", "--onnx", str(f["hf_onnx"]), "--checkpoint", str(other),
                *report], EXPECTED

    def broken_metadata(self) -> Path:
        import onnx

        proto = onnx.load(self.files["tiny"])
        key = self.rnd.choice(["mhc_export.config", "mhc_export.dtype", "mhc_export.mode"])
        value = self.rnd.choice(['{"hidden": 64,', '"float99"', '[1, 2]', "{}", "nan"])
        for p in proto.metadata_props:
            if p.key == key:
                p.value = value
        path = self.case_dir() / "meta.onnx"
        onnx.save(proto, path)
        return path

    def case_build(self) -> tuple[list[str], set[int]]:
        r = self.rnd
        f = self.files
        plan = ["--out", str(self.work / "out" / "m.plan")]
        kind = r.choice(["onnx", "flags", "out"])
        if kind == "onnx":
            bad = r.choice([self.work / "none.onnx", self.case_dir(),
                            self.corrupt_file(self.case_dir() / "b.onnx")])
            return ["build", "--onnx", str(bad), *plan], EXPECTED_TRT
        if kind == "flags":
            return ["build", "--onnx", str(f["op"]), *plan, *r.choice([
                ["--decode-max-tokens", r.choice(["0", "-1", "x"])],
                ["--prefill-max-tokens", r.choice(["0", "x"])],
                ["--fp16", "--bf16"], ["--strongly-typed", "--fp16"],
                ["--workspace-mib", "0"], ["--tensorrt", "nvidia"],
                ["--plugins", str(self.work / "none.so")],
            ])], EXPECTED_TRT
        path, _ = self.bad_path("m.plan")
        return ["build", "--onnx", str(f["op"]), "--out", str(path)], EXPECTED_TRT

    def case_diagnose(self) -> tuple[list[str], set[int]]:
        r = self.rnd
        base = ["diagnose", "--samples", "1", "--widths", "8", "16"]
        kind = r.choice(["widths", "streams", "iters", "samples", "json", "plot", "same"])
        if kind == "widths":
            base = _set_list(base, "--widths", r.choice([["0"], ["-8", "16"], ["8", "8"], ["x"],
                                                         [r.choice(HUGE)], ["64", "1e3"]]))
        elif kind in ("streams", "iters", "samples"):
            values = {"streams": ["0", "1", "9", "x"], "iters": ["0", "-1", "x"],
                      "samples": ["0", "-3", "2.5"]}[kind]
            base = _set(base, f"--{kind}", r.choice(values))
        elif kind in ("json", "plot"):
            path, _ = self.bad_path("d.json" if kind == "json" else "d.png")
            base += [f"--{kind}", str(path)]
        else:
            same = str(self.work / "out" / "d")
            base += ["--json", same, "--plot", same]
        return base, EXPECTED

    def case_outputs(self) -> tuple[list[str], set[int]]:
        """Every output path of every command: a folder, under a file, read-only."""
        r = self.rnd
        f = self.files
        which = r.choice(["op --out", "op --report", "model --out", "model --report",
                          "model --save-checkpoint", "validate --report", "export plan",
                          "build --out"] + (["hf --out", "hf --report"] if "hf_onnx" in f
                                            else []))
        path, _ = self.bad_path("r.json" if "report" in which else "m.onnx")
        good_out = str(self.case_dir() / "m.onnx")
        if which.startswith("op"):
            base = ["export", *OPS[0], "--tokens", "3"]
        elif which.startswith("model"):
            base = ["export", "--config", "tiny", "--seq", "2"]
        elif which.startswith("hf"):
            base = ["export", "--hf", str(self.hf_sharded)]
        elif which == "validate --report":
            return ["validate", "--onnx", str(f["op"]), "--report", str(path)], EXPECTED
        elif which == "build --out":
            return ["build", "--onnx", str(f["op"]), "--out", str(path)], EXPECTED_TRT
        else:  # the engine plan beside --out is a folder
            d = self.case_dir()
            (d / "m.plan").mkdir()
            return ["export", *OPS[0], "--no-validate", "--out", str(d / "m.onnx"),
                    "--build-engine"], EXPECTED_TRT
        flag = which.split()[1]
        if flag == "--out":
            return [*base, "--out", str(path)], EXPECTED
        return [*base, "--out", good_out, flag, str(path)], EXPECTED

    def case_memory(self) -> tuple[list[str], set[int]]:
        r = self.rnd
        return r.choice([
            ["export", "--op", "pre", "--hidden", r.choice(HUGE), *self.out()],
            ["export", "--op", r.choice(["post", "head", "post_pre"]), "--tokens",
             r.choice(HUGE), *self.out()],
            ["export", "--op", "sinkhorn", "--tokens", r.choice(HUGE), *self.out()],
            ["export", "--config", r.choice(["tiny", "small"]), r.choice(["--seq", "--batch"]),
             r.choice(HUGE), *self.out()],
            ["diagnose", "--widths", "64", r.choice(HUGE)],
        ]), EXPECTED

    def case_hf(self) -> tuple[list[str], set[int]]:
        """A checkpoint broken as a download can be."""
        r = self.rnd
        src = r.choice([self.hf_sharded, self.hf_single, self.native_sharded,
                        self.native_single])
        ck = self.case_dir() / "ckpt"
        shutil.copytree(src, ck)
        shards = sorted(ck.glob("*.safetensors"))
        index = ck / "model.safetensors.index.json"
        kinds = ["truncate", "empty-shard", "dtype", "config-shape", "config-json",
                 "config-missing", "model-type", "hc-mult", "header-size", "weights-missing"]
        if index.exists():
            kinds += ["index-entry", "index-file", "index-json", "shard-missing"]
        native = src in (self.native_sharded, self.native_single)
        if native:  # the published layout's own ways to break, twice as likely
            kinds += [*NATIVE_KINDS, *NATIVE_KINDS] + (["index-scale"] * 2 if index.exists()
                                                      else [])
        kind = r.choice(kinds)
        self.note = f"{kind} of {src.name}"
        shard = r.choice(shards)
        cfg_path = ck / "config.json"
        cfg = json.loads(cfg_path.read_text())
        if kind in NATIVE_KINDS or kind == "index-scale":
            _break_native(kind, ck, shards, r)
        elif kind == "truncate":
            data = shard.read_bytes()
            shard.write_bytes(data[: r.randint(0, len(data) - 1)])
        elif kind == "empty-shard":
            shard.write_bytes(b"")
        elif kind == "dtype":
            _change_dtype(shard, r)
        elif kind == "config-shape":
            key = r.choice(sorted(SHAPED_KEYS))
            cfg[key] = r.choice(SHAPED_KEYS[key])
            cfg_path.write_text(json.dumps(cfg))
        elif kind == "config-json":
            cfg_path.write_text(cfg_path.read_text()[: r.randint(0, 200)])
        elif kind == "config-missing":
            cfg_path.unlink()
        elif kind == "model-type":
            cfg_path.write_text(json.dumps({**cfg, "model_type": r.choice(["llama", None, 3])}))
        elif kind == "hc-mult":
            cfg_path.write_text(json.dumps({**cfg, "hc_mult": r.choice([0, 9, -1, "4", 2.5])}))
        elif kind == "header-size":
            data = shard.read_bytes()
            shard.write_bytes((len(data) * 2).to_bytes(8, "little") + data[8:])
        elif kind == "weights-missing":
            for s in shards:
                s.unlink()
        elif kind == "index-entry":
            idx = json.loads(index.read_text())
            del idx["weight_map"][r.choice(sorted(idx["weight_map"]))]
            index.write_text(json.dumps(idx))
        elif kind == "index-file":
            idx = json.loads(index.read_text())
            name = r.choice(sorted(idx["weight_map"]))
            idx["weight_map"][name] = "model-99999-of-99999.safetensors"
            index.write_text(json.dumps(idx))
        elif kind == "index-json":
            index.write_text(r.choice(["{", "[]", '{"weight_map": 3}', ""]))
        else:
            shard.unlink()
        # The whole model of a native checkpoint (three layers): a slice reads only its
        # layers, so a break elsewhere is no bad input for it.
        extra = r.choice([[], ["--dtype", "bfloat16"], ["--weights", "native"],
                          ["--weights", "native", "--dtype", "bfloat16"]] if native
                         else [[], ["--layers", "0:1"], ["--dtype", "bfloat16"]])
        return ["export", "--hf", str(ck), *extra, *self.out()], EXPECTED

    def case_hf_memory(self) -> tuple[list[str], set[int]]:
        """A consistent checkpoint too large for this machine, even one layer of it."""
        extra = self.rnd.choice([[], ["--layers", "0:1"], ["--layers", "1:2"],
                                 ["--dtype", "bfloat16", "--layers", "0:1"]])
        return ["export", "--hf", str(self.hf_huge), *extra, *self.out()], EXPECTED

    def case_hf_flags(self) -> tuple[list[str], set[int]]:
        r = self.rnd
        ck = str(r.choice([self.hf_sharded, self.hf_single, self.native_sharded,
                           self.native_single]))
        bad = r.choice([
            ["--layers", r.choice(["1:0", "0:5", "a:b", "0", "-1:1", "", "3:4", "2:2"])],
            ["--weights", r.choice(["fp8", "Native", "", "dequantised"])],
            ["--weights", "native", "--opset", r.choice(["18", "17"])],
            ["--weights", "native", "--layers", r.choice(["0:4", "x", "1:1"])],
            ["--weights", "native", r.choice(["--op", "--config"]), r.choice(["pre", "tiny"])],
            ["--dtype", r.choice(["float16", "int8", "fp8"])],
            ["--mode", "decomposed"], ["--op", "pre"], ["--config", "tiny"], ["--seed", "2"],
            ["--checkpoint", str(self.files["ckpt"])], ["--streams", "2"],
            ["--opset", r.choice(BAD_OPSETS)], ["--no-validate", "--seq", "4"],
            ["--save-checkpoint", "x.safetensors"],
        ])
        path = r.choice([ck, str(self.work / "nowhere"), str(self.files["file"]),
                         str(self.files["ckpt"])]) if r.random() < 0.2 else ck
        if path != ck:
            bad = []
        if r.random() < 0.05:  # --layers / --weights without --hf: flags that would be ignored
            return ["export", "--config", "tiny", "--no-validate", *r.choice(
                [["--weights", "native"], ["--layers", "0:1"], ["--weights", "dequantized"]]),
                *self.out()], EXPECTED
        return ["export", "--hf", path, *bad, *self.out()], EXPECTED

    def cleanup(self) -> None:
        _make_read_only(self.ro, undo=True)


def _huge_checkpoint(path: Path) -> Path:
    """A V4-Flash-wide checkpoint whose every layer (bf16, x3 while exporting) is over twice
    this machine's memory: the header describes every tensor, the data is a sparse file."""
    from mhc_export.adapters.hf_checkpoint import available_memory
    from mhc_export.adapters.hf_preflight import expected_tensors
    from mhc_export.adapters.hf_testing import FLASH_SLICE, make_config

    expert_bytes = 3 * 2048 * 4096 * 2 * 3  # w1, w2, w3 in bf16, x3 while exporting
    experts = max(8, 2 * available_memory() // expert_bytes + 1)
    config = make_config(**{**FLASH_SLICE, "n_routed_experts": experts})
    path.mkdir()
    config.save_pretrained(path)
    header, offset = {}, 0
    for name, t in expected_tensors(config).items():
        size = t.numel() * t.element_size() // (2 if t.is_floating_point() else 1)
        dtype = "BF16" if t.is_floating_point() else {8: "I64", 4: "I32"}[t.element_size()]
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    with open(path / "model.safetensors", "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(8 + len(text) + offset)  # sparse: no disk used
    return path


def _change_dtype(shard: Path, r: random.Random) -> None:
    """Rewrite one tensor's dtype in the header (same header length)."""
    def edit(header: dict) -> None:
        name = r.choice([k for k in header if k != "__metadata__"])
        header[name]["dtype"] = r.choice(["I32", "F16", "I64", "X9", "BOOL", "U8"])

    edit_header(shard, edit)


# How a checkpoint in DeepSeek's published layout breaks beyond what any checkpoint can:
# a quantized weight or its scale in another dtype (never I8 <-> U8 for FP4 bytes, both
# valid), a scale of another shape (same bytes),
# a scale dropped from the shard, a config whose block size or compress_ratios disagree
# with the files ("index-scale", a scale's index entry dropped, needs an index). Never an
# MTP tensor: an export does not read the MTP block. Not config's expert_dtype either:
# the loader decodes each expert by its stored dtype, so a wrong expert_dtype is harmless.
NATIVE_KINDS = ["scale-dtype", "weight-dtype", "scale-shape", "scale-missing", "quant-block",
                "compress-ratios"]


def _break_native(kind: str, ck: Path, shards: list[Path], r: random.Random) -> None:
    cfg_path, index = ck / "config.json", ck / "model.safetensors.index.json"
    cfg = json.loads(cfg_path.read_text())
    if kind in ("quant-block", "compress-ratios"):
        # (absent or null is fine: 128 x 128, as published; and so is any block that gives
        # these small weights the same grid, e.g. 64 x 64: hence 16 x 16 and 32 x 8)
        if kind == "quant-block":
            cfg["quantization_config"]["weight_block_size"] = r.choice(
                [[16, 16], [32, 8], [0, 128], [128], "128", [-128, 128], [128.0, 128]])
        else:  # (extra entries are fine: the published list has one more, for the MTP)
            ratios = cfg["compress_ratios"]
            cfg["compress_ratios"] = r.choice([ratios[:-2], [7] * len(ratios), "4",
                                               [r.choice([4, 128]), *ratios[1:]]])
        cfg_path.write_text(json.dumps(cfg))
        return
    if kind == "index-scale":
        idx = json.loads(index.read_text())
        del idx["weight_map"][r.choice(sorted(k for k in idx["weight_map"]
                                              if k.endswith(".scale") and "mtp." not in k))]
        index.write_text(json.dumps(idx))
        return
    # a shard holding quantized weights (all of them in a one-file checkpoint)
    shard = r.choice([s for s in shards if _quantized(s)])

    def edit(header: dict) -> None:
        scales = sorted(k for k in header if k.endswith(".scale") and not k.startswith("mtp."))
        if kind == "scale-dtype":
            # (not U8: UE8M0 bytes without their dtype, which the decode takes)
            header[r.choice(scales)]["dtype"] = r.choice(["F8_E4M3", "I8", "BOOL", "F16"])
        elif kind == "weight-dtype":
            name = r.choice([s.removesuffix(".scale") + ".weight" for s in scales])
            header[name]["dtype"] = {"F8_E4M3": r.choice(["I8", "F8_E8M0", "U8"]),
                                     "I8": r.choice(["F8_E4M3", "F8_E5M2", "BF16"])
                                     }[header[name]["dtype"]]
        elif kind == "scale-shape":  # the same number of bytes in another shape
            entry = header[r.choice(scales)]
            shape = entry["shape"]
            entry["shape"] = ([shape[1], shape[0]] if shape[0] != shape[1]
                              else [shape[0] * shape[1], 1] if shape[0] > 1 else [*shape, 1])
        else:
            del header[r.choice(scales)]

    edit_header(shard, edit)


def _quantized(shard: Path) -> bool:
    data = shard.read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    return any(k.endswith(".scale") and not k.startswith("mtp.") for k in header)


def _set(args: list[str], flag: str, value: str) -> list[str]:
    if flag in args:
        i = args.index(flag)
        return [*args[:i + 1], value, *args[i + 2:]]
    return [*args, flag, value]


def _set_list(args: list[str], flag: str, values: list[str]) -> list[str]:
    i = args.index(flag)
    j = i + 1
    while j < len(args) and not args[j].startswith("--"):
        j += 1
    return [*args[:i + 1], *values, *args[j:]]


def _make_read_only(folder: Path, undo: bool = False) -> None:
    """Read-only for root too: the immutable flag (chmod does not stop root)."""
    root = os.geteuid() == 0 and shutil.which("chattr")
    if undo and root:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755 if undo else 0o555)
    if not undo and root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)


def _snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def run_case(args: list[str], expected: set[int], roots: list[Path]) -> str | None:
    """None when the case behaved; else what went wrong."""
    before = set().union(*(_snapshot(r) for r in roots))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli_main(args)
    except SystemExit as e:
        rc = e.code
    except BaseException as e:
        return f"raised {type(e).__name__}: {e}"
    text = err.getvalue().strip()
    left = set().union(*(_snapshot(r) for r in roots)) - before
    if rc not in expected:
        return f"exit {rc}: {text[:300]}"
    if len(text.splitlines()) != 1:
        return f"{len(text.splitlines())} lines on stderr: {text[:300]}"
    if "Traceback" in text:
        return f"traceback: {text[:300]}"
    if left:
        return f"left files: {sorted(str(p) for p in left)}"
    return None


def fuzz(count: int, seed: int, families: list[str] | None = None, with_hf: bool | None = None,
         ) -> tuple[int, list[tuple[list[str], str]], dict[str, int]]:
    """Run ``count`` cases; (count, failures, cases per family)."""
    rnd = random.Random(seed)
    if with_hf is None:
        with_hf = _has_hf() and (families is None or any(f.startswith("hf") for f in families))
    failures: list[tuple[list[str], str]] = []
    per_family: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(d)
        saved_dir = preflight.OUTPUT_DIR
        preflight.OUTPUT_DIR = tmp / "engines"  # default outputs stay in the sandbox
        fz = Fuzzer(tmp, rnd, with_hf)
        try:
            names = [f for f in (families or list(fz.families)) if f in fz.families]
            roots = [tmp / "cases", tmp / "engines", tmp / "readonly", ROOT / "engines"]
            for _ in range(count):
                family = rnd.choice(names)
                per_family[family] = per_family.get(family, 0) + 1
                fz.note = family
                args, expected = fz.families[family]()
                problem = run_case(args, expected, [r for r in roots if r.exists()])
                if problem:
                    failures.append((args, f"[{fz.note}] {problem}"))
                for case in (tmp / "cases").iterdir():
                    shutil.rmtree(case) if case.is_dir() else case.unlink()
        finally:
            fz.cleanup()
            preflight.OUTPUT_DIR = saved_dir
    return count, failures, per_family


def _has_hf() -> bool:
    try:
        import transformers.models.deepseek_v4  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", help="comma-separated subset (default: all): op, model, "
                                       "validate, build, diagnose, outputs, memory, hf, hf-flags, "
                                       "hf-memory")
    a = ap.parse_args(argv)
    families = a.families.split(",") if a.families else None
    count, failures, per_family = fuzz(a.count, a.seed, families)
    shown = ", ".join(f"{k} {v}" for k, v in sorted(per_family.items()))
    print(f"fuzz_cli: {count} bad invocations, seed {a.seed} ({shown}): "
          f"{count - len(failures)} failed cleanly (one line, expected exit, no file), "
          f"{len(failures)} did not")
    for args, problem in failures[:30]:
        print("FAIL", " ".join(args), "->", problem)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
