"""smg.engine_grpc.sampling: an OpenAI body becomes the engines' GenerateRequest field by
field, with each engine's defaults for what the client left unset."""
from __future__ import annotations

import orjson
import pytest
from smg_grpc_proto.generated import sglang_scheduler_pb2 as sglang_pb
from smg_grpc_proto.generated import vllm_engine_pb2 as vllm_pb

from smg.engine_grpc.sampling import (
    InvalidSampling,
    build_generate_request,
    read_sampling,
    sglang_generate_request,
    vllm_generate_request,
)

IDS = [11, 12, 13]


def sg(body, **kw):
    return sglang_generate_request(body, IDS, request_id=kw.pop("request_id", "rid-1"), **kw)


def vl(body, **kw):
    return vllm_generate_request(body, IDS, request_id=kw.pop("request_id", "rid-1"), **kw)


# ---------------------------------------------------------------- read_sampling


def test_read_sampling_defaults_leave_knobs_unset():
    s = read_sampling({})
    assert (s.temperature, s.top_p, s.top_k, s.min_p) == (None, None, None, None)
    assert (s.frequency_penalty, s.presence_penalty, s.repetition_penalty) == (None, None, None)
    assert s.max_tokens is None and s.min_tokens is None and s.seed is None
    assert s.stop == () and s.stop_token_ids == () and s.logit_bias == ()
    assert s.n == 1 and not s.ignore_eos and s.skip_special_tokens and s.spaces_between_special_tokens
    assert not s.no_stop_trim and not s.logprobs and s.constraint is None and not s.stream


def test_chat_max_completion_tokens_wins_over_max_tokens():
    assert read_sampling({"max_completion_tokens": 7, "max_tokens": 9}).max_tokens == 7
    assert read_sampling({"max_tokens": 9}).max_tokens == 9
    assert read_sampling({"max_completion_tokens": None, "max_tokens": 9}).max_tokens == 9


def test_completion_reads_max_tokens_only():
    assert read_sampling({"max_completion_tokens": 7}, "completion").max_tokens is None
    assert read_sampling({"max_tokens": 9}, "completion").max_tokens == 9


def test_stop_string_becomes_list():
    assert read_sampling({"stop": "END"}).stop == ("END",)
    assert read_sampling({"stop": ["a", "b"]}).stop == ("a", "b")
    assert read_sampling({"stop": None}).stop == ()


def test_seed_falls_back_to_sampling_seed():
    assert read_sampling({"sampling_seed": 5}).seed == 5
    assert read_sampling({"seed": 3, "sampling_seed": 5}).seed == 3


def test_logprobs_shapes_per_endpoint():
    chat = read_sampling({"logprobs": True, "top_logprobs": 3})
    assert chat.logprobs and chat.top_logprobs == 3
    assert not read_sampling({"logprobs": False, "top_logprobs": 3}).logprobs
    comp = read_sampling({"logprobs": 2}, "completion")
    assert comp.logprobs and comp.top_logprobs == 2
    zero = read_sampling({"logprobs": 0}, "completion")
    assert zero.logprobs and zero.top_logprobs == 0
    assert not read_sampling({}, "completion").logprobs


def test_logit_bias_must_name_token_ids():
    assert read_sampling({"logit_bias": {"50256": -100}}).logit_bias == (("50256", -100.0),)
    with pytest.raises(InvalidSampling):
        read_sampling({"logit_bias": {"hello": 1}})
    with pytest.raises(InvalidSampling):
        read_sampling({"logit_bias": [1, 2]})


def test_unknown_endpoint_is_a_bug():
    with pytest.raises(ValueError):
        read_sampling({}, "embeddings")


# ------------------------------------------------------------------------ SGLang


def test_sglang_unset_knobs_get_sglang_defaults_not_proto_zero():
    req = sg({})
    p = req.sampling_params
    assert p.temperature == pytest.approx(1.0)
    assert p.top_p == pytest.approx(1.0)
    assert p.top_k == -1
    assert p.min_p == 0.0
    assert (p.frequency_penalty, p.presence_penalty) == (0.0, 0.0)
    assert p.repetition_penalty == pytest.approx(1.0)
    assert not p.HasField("max_new_tokens")
    assert p.n == 1
    assert p.skip_special_tokens and p.spaces_between_special_tokens
    assert not p.ignore_eos and not p.no_stop_trim
    assert p.min_new_tokens == 0
    assert p.WhichOneof("constraint") is None
    assert not req.HasField("data_parallel_rank")


def test_sglang_request_envelope():
    req = sg({"stream": True}, request_id="abc", original_text="hi there", require_reasoning=True)
    assert isinstance(req, sglang_pb.GenerateRequest)
    assert req.request_id == "abc"
    assert list(req.tokenized.input_ids) == IDS
    assert req.tokenized.original_text == "hi there"
    assert req.stream is True
    assert req.require_reasoning is True
    assert req.return_logprob is False and req.top_logprobs_num == 0
    assert req.logprob_start_len == -1


def test_sglang_every_sampling_field():
    body = {
        "temperature": 0.25,
        "top_p": 0.5,
        "top_k": 40,
        "min_p": 0.125,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "repetition_penalty": 1.25,
        "max_completion_tokens": 64,
        "min_tokens": 4,
        "stop": ["</s>", "###"],
        "stop_token_ids": [2, 7],
        "n": 3,
        "logit_bias": {"42": 2.5},
        "ignore_eos": True,
        "skip_special_tokens": False,
        "no_stop_trim": True,
    }
    p = sg(body).sampling_params
    assert p.temperature == pytest.approx(0.25)
    assert p.top_p == pytest.approx(0.5)
    assert p.top_k == 40
    assert p.min_p == pytest.approx(0.125)
    assert p.frequency_penalty == pytest.approx(0.5)
    assert p.presence_penalty == pytest.approx(-0.5)
    assert p.repetition_penalty == pytest.approx(1.25)
    assert p.HasField("max_new_tokens") and p.max_new_tokens == 64
    assert p.min_new_tokens == 4
    assert list(p.stop) == ["</s>", "###"]
    assert list(p.stop_token_ids) == [2, 7]
    assert p.n == 3
    assert dict(p.logit_bias) == {"42": 2.5}
    assert p.ignore_eos and p.no_stop_trim
    assert not p.skip_special_tokens


def test_sglang_temperature_zero_is_sent_as_zero():
    assert sg({"temperature": 0}).sampling_params.temperature == 0.0


def test_sglang_max_tokens_zero_is_present():
    p = sg({"max_tokens": 0}).sampling_params
    assert p.HasField("max_new_tokens") and p.max_new_tokens == 0


def test_sglang_caller_skip_special_tokens_overrides_body():
    assert not sg({"skip_special_tokens": True}, skip_special_tokens=False).sampling_params.skip_special_tokens
    assert sg({"skip_special_tokens": False}, skip_special_tokens=True).sampling_params.skip_special_tokens


def test_sglang_chat_logprobs():
    req = sg({"logprobs": True, "top_logprobs": 5})
    assert req.return_logprob and req.top_logprobs_num == 5
    req = sg({"logprobs": True})
    assert req.return_logprob and req.top_logprobs_num == 0
    req = sg({"logprobs": False, "top_logprobs": 5})
    assert not req.return_logprob and req.top_logprobs_num == 0


def test_sglang_completion_logprobs():
    req = sg({"logprobs": 3}, endpoint="completion")
    assert req.return_logprob and req.top_logprobs_num == 3


def test_sglang_has_no_seed_field():
    p = sg({"seed": 9}).sampling_params
    assert "seed" not in {f.name for f in p.DESCRIPTOR.fields}


def test_sglang_data_parallel_rank_zero_is_a_pin():
    req = sg({}, data_parallel_rank=0)
    assert req.HasField("data_parallel_rank") and req.data_parallel_rank == 0
    assert sg({}, data_parallel_rank=3).data_parallel_rank == 3


def test_sglang_stream_override():
    assert sg({"stream": True}, stream=False).stream is False
    assert sg({}, stream=True).stream is True


def test_sglang_json_schema_constraint():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    p = sg({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}).sampling_params
    assert p.WhichOneof("constraint") == "json_schema"
    assert orjson.loads(p.json_schema) == schema


def test_sglang_json_object_constraint():
    p = sg({"response_format": {"type": "json_object"}}).sampling_params
    assert p.WhichOneof("constraint") == "json_schema"
    assert orjson.loads(p.json_schema) == {"type": "object"}


def test_sglang_text_format_is_no_constraint():
    assert sg({"response_format": {"type": "text"}}).sampling_params.WhichOneof("constraint") is None


def test_sglang_regex_and_ebnf():
    p = sg({"regex": "[0-9]+"}).sampling_params
    assert p.WhichOneof("constraint") == "regex" and p.regex == "[0-9]+"
    p = sg({"ebnf": 'root ::= "a"'}).sampling_params
    assert p.WhichOneof("constraint") == "ebnf_grammar" and p.ebnf_grammar == 'root ::= "a"'


def test_completion_json_schema_string():
    p = sg({"json_schema": '{"type":"string"}'}, endpoint="completion").sampling_params
    assert p.WhichOneof("constraint") == "json_schema" and p.json_schema == '{"type":"string"}'


def test_two_body_constraints_are_refused():
    with pytest.raises(InvalidSampling) as e:
        sg({"regex": "a", "ebnf": "b"})
    assert e.value.status_hint == 400
    with pytest.raises(InvalidSampling):
        vl({"response_format": {"type": "json_object"}, "regex": "a"})


def test_sglang_tool_constraint_used_when_body_has_none():
    p = sg({}, constraint=("structural_tag", '{"tag":1}')).sampling_params
    assert p.WhichOneof("constraint") == "structural_tag" and p.structural_tag == '{"tag":1}'
    p = sg({}, constraint=("ebnf", "g")).sampling_params
    assert p.WhichOneof("constraint") == "ebnf_grammar"


def test_sglang_response_format_wins_over_tool_constraint():
    p = sg({"regex": "x"}, constraint=("json_schema", "{}")).sampling_params
    assert p.WhichOneof("constraint") == "regex" and p.regex == "x"


def test_unknown_tool_constraint_kind_refused():
    with pytest.raises(InvalidSampling):
        sg({}, constraint=("choice", "a"))
    with pytest.raises(InvalidSampling):
        vl({}, constraint=("choice", "a"))


# -------------------------------------------------------------------------- vLLM


def test_vllm_unset_knobs_defaults():
    req = vl({})
    assert isinstance(req, vllm_pb.GenerateRequest)
    p = req.sampling_params
    assert not p.HasField("temperature")
    assert p.top_p == pytest.approx(1.0)
    assert p.top_k == 0
    assert p.min_p == 0.0
    assert (p.frequency_penalty, p.presence_penalty) == (0.0, 0.0)
    assert p.repetition_penalty == pytest.approx(1.0)
    assert not p.HasField("max_tokens")
    assert not p.HasField("seed")
    assert not p.HasField("logprobs")
    assert p.n == 1 and p.min_tokens == 0
    assert p.skip_special_tokens and p.spaces_between_special_tokens
    assert not p.ignore_eos and not p.include_stop_str_in_output
    assert p.WhichOneof("constraint") is None
    assert not req.HasField("data_parallel_rank")


def test_vllm_request_envelope():
    req = vl({"stream": True}, request_id="xyz", original_text="hello")
    assert req.request_id == "xyz"
    assert req.WhichOneof("input") == "tokenized"
    assert list(req.tokenized.input_ids) == IDS
    assert req.tokenized.original_text == "hello"
    assert req.stream is True


def test_vllm_every_sampling_field():
    body = {
        "temperature": 0.0,
        "top_p": 0.75,
        "top_k": 20,
        "min_p": 0.25,
        "frequency_penalty": 1.5,
        "presence_penalty": 0.25,
        "repetition_penalty": 1.5,
        "max_tokens": 32,
        "min_tokens": 2,
        "stop": "STOP",
        "stop_token_ids": [9],
        "n": 2,
        "seed": 1234,
        "logit_bias": {"7": -1.0, "8": 3.0},
        "ignore_eos": True,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
    }
    p = vl(body).sampling_params
    assert p.HasField("temperature") and p.temperature == 0.0
    assert p.top_p == pytest.approx(0.75)
    assert p.top_k == 20
    assert p.min_p == pytest.approx(0.25)
    assert p.frequency_penalty == pytest.approx(1.5)
    assert p.presence_penalty == pytest.approx(0.25)
    assert p.repetition_penalty == pytest.approx(1.5)
    assert p.HasField("max_tokens") and p.max_tokens == 32
    assert p.min_tokens == 2
    assert list(p.stop) == ["STOP"]
    assert list(p.stop_token_ids) == [9]
    assert p.n == 2
    assert p.HasField("seed") and p.seed == 1234
    assert dict(p.logit_bias) == {7: -1.0, 8: 3.0}
    assert p.ignore_eos
    assert not p.skip_special_tokens and not p.spaces_between_special_tokens


def test_vllm_negative_top_k_is_off():
    assert vl({"top_k": -1}).sampling_params.top_k == 0


def test_vllm_chat_logprobs():
    assert vl({"logprobs": True, "top_logprobs": 4}).sampling_params.logprobs == 4
    assert vl({"logprobs": True}).sampling_params.logprobs == 1
    assert vl({"logprobs": True, "top_logprobs": 0}).sampling_params.logprobs == 0
    assert vl({"logprobs": True, "top_logprobs": 50}).sampling_params.logprobs == 20
    assert not vl({"logprobs": False, "top_logprobs": 4}).sampling_params.HasField("logprobs")


def test_vllm_completion_logprobs():
    assert vl({"logprobs": 3}, endpoint="completion").sampling_params.logprobs == 3


def test_vllm_include_stop_str_follows_no_stop_trim_unless_given():
    assert vl({"no_stop_trim": True}).sampling_params.include_stop_str_in_output
    assert not vl({"no_stop_trim": True, "include_stop_str_in_output": False}).sampling_params.include_stop_str_in_output
    assert vl({"include_stop_str_in_output": True}).sampling_params.include_stop_str_in_output


def test_vllm_constraints():
    schema = {"type": "array"}
    p = vl({"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}).sampling_params
    assert p.WhichOneof("constraint") == "json_schema" and orjson.loads(p.json_schema) == schema
    p = vl({"response_format": {"type": "json_object"}}).sampling_params
    assert p.WhichOneof("constraint") == "json_schema" and orjson.loads(p.json_schema) == {"type": "object"}
    p = vl({"ebnf": "root ::= x"}).sampling_params
    assert p.WhichOneof("constraint") == "grammar" and p.grammar == "root ::= x"
    p = vl({"regex": "a+"}).sampling_params
    assert p.WhichOneof("constraint") == "regex" and p.regex == "a+"
    p = vl({}, constraint=("structural_tag", "{}")).sampling_params
    assert p.WhichOneof("constraint") == "structural_tag"
    p = vl({}, constraint=("ebnf", "g")).sampling_params
    assert p.WhichOneof("constraint") == "grammar"


def test_vllm_refuses_tool_constraint_with_body_constraint():
    with pytest.raises(InvalidSampling):
        vl({"regex": "x"}, constraint=("json_schema", "{}"))


def test_vllm_data_parallel_rank_and_stream_override():
    req = vl({"stream": True}, data_parallel_rank=0, stream=False)
    assert req.HasField("data_parallel_rank") and req.data_parallel_rank == 0
    assert req.stream is False


# ------------------------------------------------------------------- dispatching


def test_build_generate_request_dispatches_by_runtime():
    assert isinstance(build_generate_request("sglang", {}, IDS, request_id="a"), sglang_pb.GenerateRequest)
    vreq = build_generate_request("vllm", {}, IDS, request_id="a", require_reasoning=True)
    assert isinstance(vreq, vllm_pb.GenerateRequest)
    with pytest.raises(ValueError):
        build_generate_request("trtllm", {}, IDS, request_id="a")


def test_requests_survive_the_wire():
    """What is built serializes and parses back equal (no field the proto cannot carry)."""
    body = {"temperature": 0.5, "max_tokens": 3, "stop": "x", "logit_bias": {"1": 1}, "regex": "a"}
    for req in (sg(body, data_parallel_rank=1), vl(body, data_parallel_rank=1)):
        again = type(req).FromString(req.SerializeToString())
        assert again == req
