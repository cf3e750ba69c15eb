#!/usr/bin/env python3
"""The official `openai` client against tabagent's /v1 routes.

    python3 tests/openai_client.py BASE_URL CHAT_MODEL [EMBEDDING_MODEL]

CHAT_MODEL `-` skips the chat checks (a build or models dir without chat); the
server's API key comes from OPENAI_API_KEY. With TABAGENT_CA_FILE (an https
BASE_URL), the client trusts that CA only, first checks that a client
without it refuses the server's certificate, and leaves out the tool and
structured-output checks (the transport is under test there).
Run by tests/inference.rs (the_official_openai_python_client_works) and
tests/embeddings.rs (the_official_openai_python_client_embeds); needs
`python3 -m pip install openai`. Exits non-zero with the failing check.
"""

import os
import sys

import openai


def main(base_url: str, chat_model: str, embedding_model: str | None) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=os.environ["OPENAI_API_KEY"], max_retries=0, timeout=60,
                           http_client=http_client(base_url))

    ids = [m.id for m in client.models.list()]
    assert chat_model in ids or chat_model == "-", f"models.list: {ids}"
    if embedding_model:
        assert embedding_model in ids, f"models.list: {ids}"
    if chat_model != "-":
        check_chat(client, chat_model)
        # Over HTTPS (tests/tls.rs) the transport is under test: chat, streams
        # and the Responses API; the tool checks are the plain-HTTP run's.
        if not os.environ.get("TABAGENT_CA_FILE"):
            check_tools_and_structured_output(client, chat_model)
        check_responses(client, chat_model)
    if embedding_model:
        check_embeddings(client, embedding_model)
    print("openai client: ok")


def http_client(base_url: str) -> "openai.DefaultHttpxClient | None":
    """None (the default client) unless TABAGENT_CA_FILE names the CA to trust."""
    ca_file = os.environ.get("TABAGENT_CA_FILE")
    if not ca_file:
        return None
    import ssl

    assert base_url.startswith("https://"), base_url
    untrusting = openai.OpenAI(base_url=base_url, api_key=os.environ["OPENAI_API_KEY"], max_retries=0, timeout=10)
    try:
        untrusting.models.list()
    except openai.APIConnectionError as error:
        chain, cause = [], error
        while cause is not None and len(chain) < 8:
            chain.append(repr(cause))
            cause = cause.__cause__ or cause.__context__
        assert any("CERTIFICATE_VERIFY_FAILED" in link for link in chain), chain
    else:
        raise AssertionError("a client without the CA must refuse the certificate")
    return openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca_file))


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



def check_tools_and_structured_output(client: openai.OpenAI, chat_model: str) -> None:
    """Tools and JSON-schema output; the tiny model's output is noise, so the
    schemas carry bounds that make even noise finish."""
    import json

    import pydantic

    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 10}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }]
    messages = [{"role": "user", "content": "weather in Paris?"}]
    chat = client.chat.completions.create(
        model=chat_model,
        messages=messages,
        tools=tools,
        tool_choice="required",
        # One call: with parallel calls allowed, noise may go on calling
        # until the context ends.
        parallel_tool_calls=False,
        max_tokens=200,
        seed=7,
    )
    choice = chat.choices[0]
    assert choice.finish_reason == "tool_calls", chat
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather", chat
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments.get("city"), str) and len(arguments["city"]) <= 10, arguments
    # The result goes back as a tool message; the answer is plain text.
    followup = client.chat.completions.create(
        model=chat_model,
        messages=messages + [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
        ],
        tools=tools,
        tool_choice="none",
        max_tokens=5,
    )
    assert followup.choices[0].message.tool_calls is None, followup
    assert isinstance(followup.choices[0].message.content, str), followup

    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=10)
        age: int = pydantic.Field(ge=0, le=120)

    parse = getattr(getattr(client, "beta", None), "chat", None)
    parse = parse.completions.parse if parse is not None else client.chat.completions.parse
    parsed = parse(model=chat_model, messages=messages, response_format=Person, max_tokens=200)
    person = parsed.choices[0].message.parsed
    assert person is not None, parsed
    assert isinstance(person, Person) and 0 <= person.age <= 120, person

    try:
        client.chat.completions.create(model=chat_model, messages=messages, audio={"voice": "alloy"})
    except openai.BadRequestError as e:
        assert "audio" in str(e), e
    else:
        raise AssertionError("an unsupported field must be a 400")


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


# ---- the Responses API (client.responses) ----


def check_responses(client: openai.OpenAI, chat_model: str) -> None:
    first = client.responses.create(
        model=chat_model, input="hello there", instructions="be brief", max_output_tokens=8
    )
    assert first.object == "response" and first.id.startswith("resp_"), first
    assert first.status in ("completed", "incomplete"), first
    assert first.output[0].type == "message", first
    assert first.output[0].content[0].type == "output_text", first
    assert isinstance(first.output_text, str), first
    assert first.usage.input_tokens > 0 and first.usage.total_tokens >= first.usage.input_tokens, first

    second = client.responses.create(
        model=chat_model, input="and again", previous_response_id=first.id, max_output_tokens=8
    )
    alone = client.responses.create(model=chat_model, input="and again", max_output_tokens=8, store=False)
    assert second.previous_response_id == first.id, second
    assert second.instructions is None, "instructions are not inherited"
    assert second.usage.input_tokens > alone.usage.input_tokens, (second.usage, alone.usage)
    assert client.responses.retrieve(second.id).output_text == second.output_text

    # Streamed, continuing the chain: OpenAI's events, numbered in order.
    events = list(
        client.responses.create(
            model=chat_model, input="more", previous_response_id=second.id, max_output_tokens=8, stream=True
        )
    )
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"], types
    assert types[-1] in ("response.completed", "response.incomplete"), types
    assert [e.sequence_number for e in events] == list(range(len(events))), types
    final = events[-1].response
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text, (deltas, final.output_text)
    assert final.previous_response_id == second.id, final
    assert client.responses.retrieve(final.id).output_text == final.output_text

    # The stream helper checks each item's identity as it accumulates them.
    with client.responses.stream(model=chat_model, input="hello", max_output_tokens=8) as stream:
        streamed = list(stream)
    last = streamed[-1]
    assert last.type in ("response.completed", "response.incomplete"), [e.type for e in streamed]
    text = "".join(e.delta for e in streamed if e.type == "response.output_text.delta")
    if last.type == "response.completed":
        assert stream.get_final_response().output_text == text
    else:
        assert last.response.incomplete_details.reason == "max_output_tokens", last
        assert last.response.output_text == text

    client.responses.delete(first.id)
    for gone in (first.id, alone.id):
        try:
            client.responses.retrieve(gone)
        except openai.NotFoundError:
            pass
        else:
            raise AssertionError(f"{gone} must be gone (deleted, or never stored)")
    try:
        client.responses.create(model=chat_model, input="x", reasoning={"effort": "low"})
    except openai.BadRequestError as error:
        assert "reasoning" in str(error), error
    else:
        raise AssertionError("an unsupported field must be a 400")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
