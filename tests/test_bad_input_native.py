"""Bad input in DeepSeek's published checkpoint layout (native names, FP8 + UE8M0 block
scales, FP4 experts), found by scripts/qa/fuzz_cli.py's hf families.

Each refusal test failed on the code before the fix: a scale grid of another shape
raised a RuntimeError mid-load (FP4) or was cut silently to the weight (FP8: wrong
weights, exit 0), and a weight_block_size that is not two positive integers raised
TypeError/RuntimeError mid-load. Now: exit 2 and one line naming the tensor, from the
headers alone, before any work, nothing written.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from support import fails

pytest.importorskip("transformers.models.deepseek_v4",
                    reason="transformers >= 5.23 (pip install -e '.[hf]') is not installed")

from mhc_export.adapters import hf_reference
from mhc_export.adapters.hf_checkpoint import CheckpointError, inspect_checkpoint
from mhc_export.adapters.hf_loader import plan
from mhc_export.adapters.hf_testing import make_config
from mhc_export.cli import main
from mhc_export.testing.v4_checkpoints import edit_header, write_checkpoint

ONE_LAYER = dict(num_hidden_layers=1, layer_types=["sliding_attention"],
                 mlp_layer_types=["moe"])


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> Path:
    """One layer in the published layout, FP8 block scales of 16 x 16 (several blocks per
    weight), FP4 experts."""
    path = tmp_path_factory.mktemp("native") / "ckpt"
    write_checkpoint(path, make_config(**ONE_LAYER), layout="native", block=(16, 16), seed=6)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _export(ck: Path, tmp_path: Path) -> list[str]:
    return ["export", "--hf", str(ck), "--no-validate", "--out", str(tmp_path / "o" / "m.onnx")]


def test_native_fp4_scale_of_another_shape(tmp_path, capsys, native):
    """An FP4 expert's [rows, cols/32] scale written [cols/32, rows]: the same bytes."""
    ck = _copy(native, tmp_path / "ck")
    name = "layers.0.ffn.experts.1.w1.scale"

    def transpose(header):
        shape = header[name]["shape"]
        assert shape[0] != shape[1]
        header[name]["shape"] = shape[::-1]

    edit_header(ck / "model.safetensors", transpose)
    fails(_export(ck, tmp_path), capsys, name, "needs", "one per 32 FP4 values")
    assert not (tmp_path / "o").exists()


def test_native_fp4_scale_too_narrow_for_its_rows(tmp_path, capsys, native):
    """An FP4 expert's [rows, k] scale written [2 rows, k/2] (the same bytes): half the
    scales each row needs. The plan refuses it from the headers (the loader's own check of
    this, after the data was read, could no longer be reached and is gone)."""
    ck = _copy(native, tmp_path / "ck")
    name = "layers.0.ffn.experts.0.w1.scale"

    def narrow(header):
        rows, k = header[name]["shape"]
        assert k % 2 == 0
        header[name]["shape"] = [2 * rows, k // 2]

    edit_header(ck / "model.safetensors", narrow)
    info = inspect_checkpoint(ck)
    with pytest.raises(CheckpointError, match=f"scale {re.escape(name)} has shape"):
        plan(info, None, torch.float32)
    fails(_export(ck, tmp_path), capsys, name, "needs", "one per 32 FP4 values of a row")
    assert not (tmp_path / "o").exists()


def test_native_fp8_scale_grid_larger_than_the_weight(tmp_path, capsys, native):
    """Stored with 16 x 16 blocks, the config says 32 x 32: each grid is larger than its
    weight needs. Before the fix the decode cut it silently (wrong weights, exit 0)."""
    ck = _copy(native, tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["quantization_config"]["weight_block_size"] = [32, 32]
    (ck / "config.json").write_text(json.dumps(cfg))
    fails(_export(ck, tmp_path), capsys, "scale layers.0.", "32 x 32 block")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("block", ["128", [0, 128], [128], [-16, 16], [16.0, 16]])
def test_native_weight_block_size_not_two_positive_ints(tmp_path, capsys, native, block):
    ck = _copy(native, tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["quantization_config"]["weight_block_size"] = block
    (ck / "config.json").write_text(json.dumps(cfg))
    fails(_export(ck, tmp_path), capsys, "weight_block_size",
             "two positive integers")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("opts", [dict(block=(16, 16)), dict(block=(24, 40), shards=3),
                                  dict(experts="fp8", scale_fmt="float32"),
                                  dict(layout="hf", block=(24, 40))])
def test_good_quantized_checkpoints_pass_the_grid_check(tmp_path, opts):
    """Ragged blocks (24 x 40 does not divide the weights), float32 scales, FP8 experts,
    sharded, and the save_pretrained layout's *_scale_inv: all pass the preflight, and
    the grids the check accepts decode (a full load of the 16 x 16 one)."""
    opts = {"layout": "native", **opts}
    write_checkpoint(tmp_path / "ck", make_config(), seed=7, **opts)
    info = inspect_checkpoint(tmp_path / "ck")
    p = plan(info, None, torch.float32)
    if opts.get("block") == (16, 16):
        from mhc_export.adapters.hf_loader import build

        build(info, p, torch.float32)


def test_config_error_quoted_from_transformers_is_one_line(tmp_path, capsys, native):
    """compress_ratios shorter than the layers: transformers' validation message spans two
    lines; the CLI printed both (the fuzzer's one-line rule failed)."""
    ck = _copy(native, tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg.update(num_hidden_layers=2, compress_ratios=[0])
    (ck / "config.json").write_text(json.dumps(cfg))
    fails(_export(ck, tmp_path), capsys, "not a valid DeepSeek-V4 config",
             "num_hidden_layers")


def test_fp4_experts_stored_int8_and_uint8_load(tmp_path, native):
    """One expert's FP4 bytes typed U8, the others I8 (both are FP4 storage): stacking them
    promoted the bytes to int16 and the load raised RuntimeError (found by the fuzzer)."""
    from mhc_export.adapters.hf_loader import build

    truth = write_checkpoint(tmp_path / "ck", make_config(**ONE_LAYER), layout="native",
                             seed=8)
    name = "layers.0.ffn.experts.2.w2.weight"

    def retype(header):
        assert header[name]["dtype"] == "I8"
        header[name]["dtype"] = "U8"

    edit_header(tmp_path / "ck" / "model.safetensors", retype)
    info = inspect_checkpoint(tmp_path / "ck")
    model = build(info, plan(info, None, torch.float32), torch.float32)
    hf_name = next(k for k in truth if k.endswith("layers.0.mlp.experts.down_proj"))
    got = dict(model.named_parameters())[hf_name].detach().double()
    assert torch.equal(got, truth[hf_name])


_LAYER0_SCALE = "layers.0.attn.wo_a.scale"


def _layer0_damaged(tmp_path: Path) -> Path:
    """Three layers in the published layout, layer 0's wo_a scale of a wrong rank."""
    write_checkpoint(tmp_path / "ck", make_config(), layout="native", seed=9)

    def reshape(header):
        header[_LAYER0_SCALE]["shape"] = [*header[_LAYER0_SCALE]["shape"], 1]

    edit_header(tmp_path / "ck" / "model.safetensors", reshape)
    return tmp_path / "ck"


def test_slice_validation_checks_the_layers_its_reference_reads(tmp_path, capsys,
                                                                 monkeypatch):
    """--layers 1:3 validates against HF's model run from layer 0 when it fits, which reads
    layer 0: a broken layer-0 scale raised RuntimeError after the export. Now refused up
    front; --no-validate (no layer 0 read) is unaffected."""
    ck = _layer0_damaged(tmp_path)
    monkeypatch.setattr(hf_reference, "available_memory", lambda: 1 << 50)  # it fits
    out = tmp_path / "o" / "m.onnx"
    fails(["export", "--hf", str(ck), "--layers", "1:3", "--out", str(out)],
          capsys, _LAYER0_SCALE, "runs the model from layer 0", "--no-validate")
    assert not (tmp_path / "o").exists()


def test_slice_validation_without_room_for_layer0_ignores_it(tmp_path, capsys, monkeypatch):
    """When HF's float64 layers 0..2 do not fit but layers 1..2 do, validation of --layers
    1:3 runs the slice alone and never reads layer 0: its damage refused the export all the
    same. Now the export and its validation pass, against the slice's own reference."""
    ck = _layer0_damaged(tmp_path)
    info = inspect_checkpoint(ck)
    room = hf_reference._f64_bytes(info, range(1, 3))
    assert hf_reference._f64_bytes(info, range(0, 3)) > room
    monkeypatch.setattr(hf_reference, "available_memory", lambda: room)
    out = tmp_path / "o" / "m.onnx"
    capsys.readouterr()
    assert main(["export", "--hf", str(ck), "--layers", "1:3", "--out", str(out)]) == 0
    assert out.is_file()
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["config"]["reference"] == hf_reference.SLICE_REFERENCE.format(a=1, last=2)


@pytest.mark.parametrize("dtype", ["BOOL"])
def test_native_scale_of_another_dtype(tmp_path, capsys, native, dtype):
    """A scale typed BOOL (same bytes) passed the preflight: exported with its bytes read as
    0/1 scales (exit 0, wrong weights), or with validation the float64 reader raised
    KeyError. Scales are UE8M0 or F32."""
    ck = _copy(native, tmp_path / "ck")
    name = "layers.0.attn.wo_a.scale"

    def retype(header):
        assert header[name]["dtype"] == "F8_E8M0"
        header[name]["dtype"] = dtype

    edit_header(ck / "model.safetensors", retype)
    fails(_export(ck, tmp_path), capsys, name, dtype, "UE8M0 (F8_E8M0) or F32")
    assert not (tmp_path / "o").exists()
