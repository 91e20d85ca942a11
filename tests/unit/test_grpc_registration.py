"""The sans-I/O parts of gRPC worker registration: the spec's grpc fields, the model
card and labels from GetModelInfo/GetServerInfo, GetLoads parsing, and the chat
template found among a tokenizer bundle's files."""
from __future__ import annotations

import json

import pytest

from smg.text.chat_template import TemplateError, template_from_files
from smg.workers.grpc_registration import describe, target_of
from smg.workers.loads import parse_grpc_loads
from smg.workers.spec import SpecError, validate
from smg.workers.worker import Worker


def test_spec_accepts_grpc_urls_and_infers_the_mode():
    assert validate({"url": "grpc://10.0.0.1:50051"})["connection_mode"] == "grpc"
    assert validate({"url": "grpcs://e.example:443", "runtime": "vllm"})["runtime_type"] == "vllm"
    assert validate({"url": "http://10.0.0.1:50051", "connection_mode": "grpc"})["connection_mode"] == "grpc"
    with pytest.raises(SpecError, match="connection_mode"):
        validate({"url": "grpc://10.0.0.1:50051", "connection_mode": "http"})
    with pytest.raises(SpecError, match="runtime_type"):
        validate({"url": "grpc://10.0.0.1:50051", "runtime_type": "mlx"})


def test_worker_records_mode_and_target():
    w = Worker("grpc://[::1]:50051")
    assert (w.connection_mode, w.channel, w.runtime_type) == ("grpc", None, "unspecified")
    assert target_of(w) == "[::1]:50051"
    assert Worker("http://h:1").connection_mode == "http"
    w.runtime_type = "vllm"
    assert w.runtime == "vllm"


def test_describe_takes_served_name_then_model_path():
    info = {"served_model_name": "", "model_path": "/m/llama", "max_context_length": 8192,
            "tokenizer_path": "/m/llama", "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "is_generation": True}
    model_id, card, desc = describe("vllm", info, {"data_parallel_size": 2, "server_type": "vllm-grpc"})
    assert model_id == "/m/llama" and card["id"] == "/m/llama" and card["hf_model_type"] == "llama"
    assert card["max_model_len"] == 8192 and desc.context_length == 8192
    assert desc.labels["dp_size"] == "2" and desc.labels["is_generation"] == "true"
    assert describe("sglang", {"served_model_name": "x", "model_path": "/p"}, {})[0] == "x"
    assert describe("sglang", {}, {})[0] is None


def test_grpc_loads_read_64_bit_strings():
    rep = parse_grpc_loads({"timestamp": "2020-01-01T00:00:00Z", "dp_rank_count": 2, "loads": [
        {"dp_rank": 0, "num_running_reqs": 2, "num_used_tokens": "100", "max_total_num_tokens": "1000"},
        {"dp_rank": 1, "num_running_reqs": 1, "num_used_tokens": "300", "max_total_num_tokens": "1000"}]})
    assert rep["source"] == "grpc" and rep["num_running_reqs"] == 3 and rep["token_usage"] == pytest.approx(0.2)


def test_template_from_files_search_order_and_specials():
    cfg = {"bos_token": "<s>", "chat_template": "CONFIG {{ bos_token }}"}
    files = {"tokenizer_config.json": json.dumps(cfg).encode()}
    t = template_from_files(files)
    assert t.source == "CONFIG {{ bos_token }}" and t.special_tokens["bos_token"] == "<s>"
    files["chat_template.json"] = json.dumps({"chat_template": "JSON"}).encode()
    assert template_from_files(files).source == "JSON"
    files["chat_template.jinja"] = b"JINJA"
    assert template_from_files(files).source == "JINJA"
    named = {"chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]}
    t = template_from_files({"tokenizer_config.json": json.dumps(named).encode()})
    assert t.source == "D" and t.tool_use.source == "T"
    with pytest.raises(TemplateError, match="no chat template"):
        template_from_files({"tokenizer_config.json": b"{}"})
    with pytest.raises(TemplateError, match="syntax"):
        template_from_files({"chat_template.jinja": b"{% for %}"})
