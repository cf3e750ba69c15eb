#!/usr/bin/env python3
"""The official `openai` client against tabagent's /v1 routes.

    python3 tests/openai_client.py BASE_URL CHAT_MODEL [EMBEDDING_MODEL]

CHAT_MODEL `-` skips the chat checks (a build or models dir without chat).
Run by tests/inference.rs (the_official_openai_python_client_works) and
tests/embeddings.rs (the_official_openai_python_client_embeds); needs
`python3 -m pip install openai`. Exits non-zero with the failing check.
"""

import sys

import openai


def main(base_url: str, chat_model: str, embedding_model: str | None) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)

    ids = [m.id for m in client.models.list()]
    assert chat_model in ids or chat_model == "-", f"models.list: {ids}"
    if embedding_model:
        assert embedding_model in ids, f"models.list: {ids}"
    if chat_model != "-":
        check_chat(client, chat_model)
    if embedding_model:
        check_embeddings(client, embedding_model)
    print("openai client: ok")


def check_chat(client: openai.OpenAI, chat_model: str) -> None:
    messages = [{"role": "user", "content": "hello"}]
    chat = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=8, seed=1)
    choice = chat.choices[0]
    assert choice.message.role == "assistant", chat
    assert isinstance(choice.message.content, str), chat
    assert choice.finish_reason in ("stop", "length"), chat
    assert chat.usage and chat.usage.completion_tokens >= 1, chat

    stream = client.chat.completions.create(
        model=chat_model, messages=messages, max_tokens=8, seed=1, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons in (["stop"], ["length"]), reasons
    assert text == choice.message.content, (text, choice.message.content)

    completion = client.completions.create(model=chat_model, prompt="the page", max_tokens=5)
    assert completion.object == "text_completion", completion
    assert isinstance(completion.choices[0].text, str), completion

    streamed = client.completions.create(model=chat_model, prompt="the page", max_tokens=5, stream=True)
    assert any(c.choices for c in streamed)

    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("an unknown model must be a 404")



def check_embeddings(client: openai.OpenAI, model: str) -> None:
    # The client asks for base64 unless told otherwise and decodes it itself.
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "Stocks fell sharply today."]
    packed = client.embeddings.create(model=model, input=texts)
    plain = client.embeddings.create(model=model, input=texts, encoding_format="float")
    assert [d.index for d in packed.data] == [0, 1, 2], packed
    assert packed.model == model and packed.usage.prompt_tokens > 0, packed
    for a, b in zip(packed.data, plain.data):
        assert len(a.embedding) == len(b.embedding) > 0
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b))

    v = [d.embedding for d in plain.data]
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.3, (cos(v[0], v[1]), cos(v[0], v[2]))
    one = client.embeddings.create(model=model, input="a single text")
    assert len(one.data) == 1
    try:
        client.embeddings.create(model="no-such-model", input="x")
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("an unknown embedding model must be a 404")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
