"""DeepSeek-V4 checkpoints as published (issue 18): both layouts, FP8 + FP4, MTP, shards.

Tiny checkpoints come from mhc_export/testing/v4_checkpoints.py (random weights, truth kept);
every check is against the independent float64 reading of the files
(mhc_export/adapters/hf_truth.py) or HF's own float64 model built from it.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import onnx
import pytest
import torch

from mhc_export.adapters import hf_memory
from mhc_export.adapters.hf_checkpoint import CheckpointError, inspect_checkpoint
from mhc_export.adapters.hf_export import LayerSlice
from mhc_export.adapters.hf_loader import build, plan
from mhc_export.adapters.hf_reference import FULL_REFERENCE, reference_run, weights_error
from mhc_export.adapters.hf_truth import IndependentReader, e2m1_pairs, e4m3, ue8m0
from mhc_export.cli import main
from mhc_export.testing.v4_checkpoints import flash_config, write_checkpoint
from mhc_export.validation import ort_runner

F32_TOL = 1e-4
BLOCK = (16, 16)  # ragged against the tiny shapes (24, 32+32, ...): edge blocks are partial
# (layout, weights, experts, scale_fmt, mtp, shards)
FORMS = {
    "native-fp8-fp4-mtp-sharded": ("native", "fp8", "fp4", "ue8m0", True, 3),
    "native-fp8-fp4-single": ("native", "fp8", "fp4", "ue8m0", False, 1),
    "hf-fp8-f32scales-fp8experts-mtp": ("hf", "fp8", "fp8", "float32", True, 2),
    "native-bf16": ("native", "bf16", "fp4", "ue8m0", False, 1),
}


def _write(path, form: str, seed: int = 0):
    layout, weights, experts, scale_fmt, mtp, shards = FORMS[form]
    return write_checkpoint(path, layout=layout, weights=weights, experts=experts,
                            scale_fmt=scale_fmt, mtp=mtp, shards=shards, block=BLOCK, seed=seed)


@pytest.fixture(scope="module", params=list(FORMS))
def ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    truth = _write(path, request.param, seed=len(request.param))
    return request.param, path, truth


def test_decoders_match_the_format_tables():
    # E4M3: 0x38 = 1.0, 0x7E = 448, 0x01 = 2**-9 (subnormal), 0xB8 = -1; 0x7F NaN.
    got = e4m3(np.array([0x38, 0x7E, 0x01, 0xB8, 0x7F], dtype=np.uint8))
    assert got[:4].tolist() == [1.0, 448.0, 2.0 ** -9, -1.0] and np.isnan(got[4])
    assert ue8m0(np.array([127, 120, 255], dtype=np.uint8))[:2].tolist() == [1.0, 2.0 ** -7]
    # 0x71: low nibble 1 (0.5) first, then 7 (6.0); 0xF8: -0.0 then -6.0.
    assert e2m1_pairs(np.array([[0x71, 0xF8]], dtype=np.uint8)).tolist() == [[0.5, 6.0, -0.0, -6.0]]
    # Our torch decode agrees with torch's own float8 dtypes on every code.
    codes = torch.arange(256, dtype=torch.uint8)
    ours = e4m3(codes.numpy())
    torchs = codes.view(torch.float8_e4m3fn).double().numpy()
    assert np.array_equal(np.isnan(ours), np.isnan(torchs))
    assert np.array_equal(ours[~np.isnan(ours)], torchs[~np.isnan(torchs)])


def test_independent_reading_is_the_generators_truth(ckpt):
    form, path, truth = ckpt
    seen = set()
    for name, expert, value in IndependentReader(path).tensors(None):
        want = truth[name] if expert is None else truth[name][expert]
        assert np.array_equal(value, want.numpy()), (form, name, expert)
        seen.add(name)
    assert seen == set(truth)  # MTP skipped, every model tensor read
    if FORMS[form][0] == "native":
        names = json.loads((path / "config.json").read_text())
        assert names["compress_ratios"][-1] == 0 and "num_hash_layers" in names


@pytest.mark.parametrize("layers", [(0, 1), (1, 2), (2, 3), (1, 3), None],
                         ids=["sliding-hash", "csa", "hca", "csa+hca", "full"])
def test_every_layer_type_loads_exactly_and_runs_like_hf(ckpt, layers):
    form, path, _ = ckpt
    info = inspect_checkpoint(path)
    sel = range(*layers) if layers else None
    p = plan(info, sel, torch.float32)
    modules = build(info, p, torch.float32)
    graph = LayerSlice(p.config, modules) if sel else None
    holder = graph if sel else type("G", (), {"model": modules})()
    err, count, worst, lacking = weights_error(holder, path, sel)
    # Exact with power-of-two scales; one float32 rounding of code x float32 scale otherwise.
    limit = 0.0 if FORMS[form][3] == "ue8m0" else 2.0 ** -23
    assert err <= limit and not lacking and count > 0, (form, worst, err)
    ref = reference_run(info, sel, batch=2, seq=11, seed=3)
    assert not isinstance(ref, str)
    inputs, expected, label = ref
    with torch.no_grad():
        if sel is None:
            pos = torch.arange(11).unsqueeze(0).expand(2, -1)
            got = modules(input_ids=inputs["input_ids"], position_ids=pos, use_cache=False).logits
        else:
            assert label == FULL_REFERENCE.format(last=sel.stop - 1)
            got = graph(inputs["hidden_streams"].float(), inputs["input_ids"])
    rel = float((got.double() - expected).abs().max() / expected.abs().max())
    assert rel <= F32_TOL, (form, layers, rel)


def test_reference_that_does_not_fit_says_how_much_it_needs(ckpt, monkeypatch):
    """With 1 KiB available neither HF's whole float64 model nor a slice of it fits:
    reference_run says so with the size it needs (from the headers) instead of a result."""
    from mhc_export.adapters import hf_reference

    info = inspect_checkpoint(ckpt[1])
    monkeypatch.setattr(hf_reference, "available_memory", lambda: 1024)
    whole = reference_run(info, None, batch=1, seq=2, seed=0)
    assert isinstance(whole, str) and re.fullmatch(r"HF's float64 model needs ~\d+\.\d GiB", whole)
    part = reference_run(info, range(1, 2), batch=1, seq=2, seed=0)
    assert isinstance(part, str), part
    assert re.fullmatch(r"HF's float64 layers 1\.\.1 need ~\d+\.\d GiB, 0\.0 GiB available", part)


def test_a_wrong_layer_is_caught(ckpt):
    """The published-names bug (layer 1 exported for layer 2) cannot pass the weight check."""
    _, path, _ = ckpt
    info = inspect_checkpoint(path)
    p = plan(info, range(1, 2), torch.float32)
    graph = LayerSlice(p.config, build(info, p, torch.float32))
    assert weights_error(graph, path, range(1, 2))[0] <= 2.0 ** -23
    err, _, worst, _ = weights_error(graph, path, range(2, 3))  # read as if it were layer 2
    assert err > 0.1, worst


def _rewrite(path, drop: str | None = None, add: str | None = None) -> None:
    """Rewrite the shard holding ``drop`` (or the first) without it / with ``add``."""
    from safetensors.torch import load_file, save_file

    index = path / "model.safetensors.index.json"
    mapping = json.loads(index.read_text())["weight_map"] if index.is_file() else None
    file = path / (mapping[drop] if mapping and drop else
                   (next(iter(mapping.values())) if mapping else "model.safetensors"))
    tensors = load_file(file)
    if drop:
        del tensors[drop]
        if mapping:
            del mapping[drop]
    if add:
        tensors[add] = torch.zeros(4)
        if mapping:
            mapping[add] = file.name
    save_file(tensors, file)
    if mapping:
        index.write_text(json.dumps({"weight_map": mapping}))


def test_missing_or_unexpected_tensor_exits_2_naming_it(tmp_path, capsys):
    path = tmp_path / "ckpt"
    _write(path, "native-fp8-fp4-mtp-sharded")
    _rewrite(path, drop="layers.2.attn.compressor.wkv.weight")
    out = tmp_path / "out" / "x.onnx"
    assert main(["export", "--hf", str(path), "--layers", "2:3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing tensor layers.2.attn.compressor.wkv.weight" \
        in err, err
    assert not out.parent.exists()
    plan(inspect_checkpoint(path), range(0, 2), torch.float32)  # other slices still load
    _rewrite(path, drop="layers.1.ffn.experts.3.w3.weight")
    with pytest.raises(CheckpointError, match=r"missing tensor layers\.1\.ffn\.experts\.3\.w3"):
        plan(inspect_checkpoint(path), range(1, 2), torch.float32)
    path = tmp_path / "ckpt2"
    _write(path, "native-fp8-fp4-single")
    _rewrite(path, add="layers.1.attn.wq_c.weight")
    with pytest.raises(CheckpointError, match=r"unexpected tensor layers\.1\.attn\.wq_c\.weight"):
        plan(inspect_checkpoint(path), range(1, 2), torch.float32)
    path = tmp_path / "ckpt3"
    _write(path, "native-fp8-fp4-single")
    _rewrite(path, drop="layers.0.attn.wq_a.scale")
    with pytest.raises(CheckpointError, match=r"its scale layers\.0\.attn\.wq_a\.scale"):
        plan(inspect_checkpoint(path), range(0, 1), torch.float32)


def test_loading_needs_no_accelerate(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    _write(path, "native-fp8-fp4-single")
    monkeypatch.setitem(sys.modules, "accelerate", None)  # any import of it now fails
    info = inspect_checkpoint(path)
    build(info, plan(info, None, torch.float32), torch.float32)


# ---------------------------------------------------------------------------
# Real size, headers only: selection and memory
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flash_index(tmp_path_factory):
    path = tmp_path_factory.mktemp("v4flash_headers")
    write_checkpoint(path, flash_config(), header_only=True, shards=46)
    return inspect_checkpoint(path)


def test_real_size_index_selects_one_layer(flash_index):
    info = flash_index
    assert info.layout == "native" and len(info.headers) > 69000
    p = plan(info, range(3, 4), torch.bfloat16)  # every tensor of layer 3, checked on meta
    assert all(k.startswith("model.layers.0.") for k in p.pieces)
    assert len(p.pieces) == len(p.expected)
    one = hf_memory.estimate(info, range(3, 4), torch.bfloat16)
    assert 6.3e9 < one.values < 6.9e9  # ~6.6B values: 256 x 3 x 4096 x 2048 plus attention
    assert 12.5e9 < one.weight_bytes < 14e9  # bf16: "13 GB"
    native = hf_memory.estimate(info, range(3, 4), torch.bfloat16, "native")
    assert 3.2e9 < native.weight_bytes < 3.8e9  # as stored, scales included
    full = hf_memory.estimate(info, None, torch.bfloat16)
    mtp = sum(np.prod(s) * (2 if d == "I8" else 1) for n, (d, s) in info.headers.items()
              if n.startswith("mtp.") and not n.endswith(".scale"))
    assert 270e9 < full.values < 290e9 and mtp > 6e9  # MTP left out


def _options(message: str) -> list[str]:
    m = re.search(r"Options that fit: (.*)\.$", message)
    return m.group(1).split("; ") if m else []


def _parse(option: str):
    layers = re.search(r"--layers (\d+):(\d+)", option)
    dtype = torch.bfloat16 if "bfloat16" in option else torch.float32
    return (range(int(layers[1]), int(layers[2])) if layers else None, dtype,
            "native" if "--weights native" in option else "dequantized")


@pytest.mark.parametrize("layers,dtype,have_gib", [
    (None, torch.float32, 24), ((3, 4), torch.float32, 24), ((3, 4), torch.bfloat16, 24),
    ((3, 5), torch.float32, 40), ((3, 4), torch.bfloat16, 4)])
def test_refusals_name_only_what_fits(flash_index, layers, dtype, have_gib):
    have = have_gib * 2**30
    sel = range(*layers) if layers else None
    with pytest.raises(CheckpointError) as e:
        hf_memory.check_memory(flash_index, dtype, sel, have=have)
    message = str(e.value)
    options = _options(message)
    assert options or "Nothing smaller fits" in message
    for option in options:  # each suggestion passes the same check
        hf_memory.check_memory(flash_index, *[a for a in _parse(option)][1:2],
                               _parse(option)[0], _parse(option)[2], have=have)
    if (layers, dtype, have_gib) == ((3, 4), torch.bfloat16, 24):
        assert options == ["--layers 3:4 --dtype bfloat16 --weights native"]


# ---------------------------------------------------------------------------
# End to end: export, validate, native weights
# ---------------------------------------------------------------------------


def test_native_weights_export_keeps_fp8_fp4_and_passes(tmp_path, capsys):
    path = tmp_path / "ckpt"
    _write(path, "native-fp8-fp4-mtp-sharded", seed=7)
    out = tmp_path / "native.onnx"
    assert main(["export", "--hf", str(path), "--layers", "1:3", "--weights", "native",
                 "--out", str(out), "--seq", "13"]) == 0
    text = capsys.readouterr().out
    assert "RESULT: PASS" in text and FULL_REFERENCE.format(last=2) in text
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["config"]["reference"] == FULL_REFERENCE.format(last=2)
    assert all(c["passed"] for c in report["comparisons"]) and len(report["comparisons"]) == 2
    proto = onnx.load(out)
    kinds = {onnx.TensorProto.DataType.Name(t.data_type) for t in proto.graph.initializer}
    assert {"FLOAT8E4M3FN", "UINT8"} <= kinds  # stored forms survive, decoded in the graph
    # Every FP8 initializer is read by a DequantizeLinear (TensorRT's builder takes FP8 only
    # into a dequantize layer), never by a Cast.
    fp8 = {t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT8E4M3FN}
    readers = [n.op_type for n in proto.graph.node for i in n.input if i in fp8]
    assert fp8 and sorted(set(readers)) == ["DequantizeLinear"] and len(readers) == len(fp8)
    # onnx.reference on the same inputs as ONNX Runtime (fresh streams, hash ids).
    from onnx.reference import ReferenceEvaluator

    g = torch.Generator().manual_seed(5)
    inputs = {"hidden_streams": torch.randn(1, 9, 4, 64, generator=g)}
    ort = ort_runner.run(ort_runner.session(out, "CPUExecutionProvider"), inputs)
    (ref,) = ReferenceEvaluator(str(out)).run(None, {k: v.numpy() for k, v in inputs.items()})
    got = torch.as_tensor(ort["hidden_streams_out"])
    assert float((torch.from_numpy(ref) - got).abs().max() / got.abs().max()) <= F32_TOL


def test_native_weights_need_opset_19(tmp_path, capsys):
    path = tmp_path / "ckpt"
    _write(path, "native-fp8-fp4-single")
    out = tmp_path / "native.onnx"
    assert main(["export", "--hf", str(path), "--layers", "0:1", "--weights", "native",
                 "--opset", "18", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights native needs --opset 19" in err[0]
    assert not out.exists()


def test_full_model_hf_layout_export_passes_against_hf_float64(tmp_path, capsys):
    path = tmp_path / "ckpt"
    _write(path, "hf-fp8-f32scales-fp8experts-mtp", seed=9)
    out = tmp_path / "full.onnx"
    assert main(["export", "--hf", str(path), "--out", str(out), "--seq", "12"]) == 0
    text = capsys.readouterr().out
    assert "RESULT: PASS" in text and "HF DeepseekV4ForCausalLM (float64)" in text


def test_memory_estimate_within_25_percent_of_peak_rss(tmp_path):
    """One real-width layer (8 experts) exported with native weights in a fresh process."""
    import subprocess

    from mhc_export.testing.v4_checkpoints import write_real_layers

    path = tmp_path / "medium"
    write_real_layers(path, flash_config(n_routed_experts=8, vocab_size=1000), [3], top=False)
    code = ("import resource, sys\nfrom mhc_export.cli import main\nrc = main(sys.argv[1:])\n"
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "export", "--hf", str(path), "--layers",
                           "3:4", "--weights", "native", "--no-validate",
                           "--out", str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    estimate = float(re.search(r"~([\d.]+) GiB peak resident", proc.stdout)[1]) * 2**30
    peak = int(re.search(r"PEAK_KB (\d+)", proc.stdout)[1]) * 1024
    assert abs(estimate - peak) <= 0.25 * peak, (estimate / 2**30, peak / 2**30)
