"""An adapter trained against bf16 base weights is evaluated on a base of that dtype: training records the dtype
with the adapter, the base is exported as a BF16 GGUF holding exactly the weights torch trained against, and
llama.cpp serves the adapter on it (and refuses to serve it on the F32 base). Runs on the CPU (bf16 autocast);
also: gradient checkpointing trains, with the shared-prefix loss stepping aside and saying why."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support.tiny_model import make_rows, tiny_cfg

from thinktrace.errors import SpecError
from thinktrace.finetune import train_adapter
from thinktrace.finetune.device import Capabilities


def test_bf16_adapter_is_served_on_a_bf16_base(tiny_model_dir, tmp_path, monkeypatch):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from thinktrace.lm import ModelConfig, build_lm
    from thinktrace.lm.factory import clear_engines
    from thinktrace.lm.weights import adapter_gguf, served_model

    monkeypatch.setenv("THINKTRACE_CACHE", str(tmp_path / "cache"))
    # the dtype path, not the speed: on a CPU without native bf16 the tiny model's two steps are still quick
    monkeypatch.setattr("thinktrace.finetune.train.detect", lambda: Capabilities(cpu_bf16=True))
    cfg = tiny_cfg(tiny_model_dir, device="cpu", precision="bf16", max_steps=2, num_threads=1)
    result = train_adapter(cfg, make_rows(8), tmp_path / "ft", seed=0, name="trace", progress=False)
    adapter = Path(result["adapter_dir"])
    info = json.loads((adapter / "thinktrace_training.json").read_text())
    assert result["base_dtype"] == info["base_dtype"] == "bfloat16" and info["device"] == "cpu"
    assert math.isfinite(result["final_loss"]) and result["shared_prefix"]["batches"] == 2

    served = served_model(str(tiny_model_dir), training_base="bfloat16")
    assert served.dtype == "bfloat16" and served.gguf.name.endswith(".bf16.gguf")
    reader = gguf.GGUFReader(str(served.gguf))
    tensors = {t.name: t for t in reader.tensors}
    kinds = {len([d for d in t.shape if d > 1]) > 1: t.tensor_type for t in reader.tensors}
    assert kinds == {True: gguf.GGMLQuantizationType.BF16, False: gguf.GGMLQuantizationType.F32}
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16)  # what training saw
    v = gguf.quants.dequantize(tensors["blk.0.attn_v.weight"].data, gguf.GGMLQuantizationType.BF16)
    ref = base.model.layers[0].self_attn.v_proj.weight.float()
    assert (torch.from_numpy(v.reshape(ref.shape)) == ref).all()
    norm = torch.from_numpy(tensors["blk.1.ffn_norm.weight"].data.copy())
    assert (norm == base.model.layers[1].post_attention_layernorm.weight.float()).all()

    with pytest.raises(SpecError, match="trained against bfloat16 base weights.*training_base to bfloat16"):
        adapter_gguf(adapter, served_model(str(tiny_model_dir), training_base=True))
    lm = build_lm(ModelConfig(name="tuned", model=str(tiny_model_dir), adapter=str(adapter),
                              training_base="bfloat16", max_tokens=4, cache=False))
    assert lm.engine.server.served.gguf == served.gguf  # llama.cpp reads the BF16 GGUF
    assert isinstance(lm("hi")[0], str)
    clear_engines()


def test_f16_export_rounds_like_torch(tiny_model_dir, tmp_path):
    import gguf
    import torch
    from safetensors.torch import load_file

    from thinktrace.lm.gguf_export import export_checkpoint

    reader = gguf.GGUFReader(str(export_checkpoint(tiny_model_dir, tmp_path / "m.gguf", dtype="float16")))
    t = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    assert t.tensor_type == gguf.GGMLQuantizationType.F16
    ref = load_file(str(tiny_model_dir / "model.safetensors"))["model.layers.1.mlp.down_proj.weight"]
    assert (torch.from_numpy(t.data.astype("float32")).reshape(ref.shape) == ref.half().float()).all()
    with pytest.raises(SpecError, match="allowed: float32, bfloat16, float16"):
        export_checkpoint(tiny_model_dir, tmp_path / "x.gguf", dtype="int8")


def test_gradient_checkpointing_trains_and_the_shared_prefix_steps_aside(tiny_model_dir, tmp_path, capfd):
    cfg = tiny_cfg(tiny_model_dir, device="cpu", gradient_checkpointing=True, max_steps=2, num_threads=1)
    result = train_adapter(cfg, make_rows(8), tmp_path, seed=0, name="trace", progress=False)
    assert result["steps"] == 2 and math.isfinite(result["final_loss"])
    sp = result["shared_prefix"]
    assert "gradient checkpointing" in sp["reason"] and sp["batches"] == 0 and sp["other_batches"] == 2
    assert "shared-prefix loss stepped aside: gradient checkpointing" in capfd.readouterr().err
