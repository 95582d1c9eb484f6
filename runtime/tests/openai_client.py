"""Drives kaito-runtime with the official `openai` Python client.

Usage: python openai_client.py BASE_URL MODEL
Exits non-zero (with a message) when any check fails.
"""

import sys

import openai


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)

    models = client.models.list()
    assert [m.id for m in models.data] == [model], models

    resp = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello from the openai client"}],
        max_tokens=7,
        temperature=0,
    )
    text = resp.choices[0].message.content
    assert resp.model == model, resp
    assert resp.choices[0].finish_reason == "length", resp
    assert resp.usage.completion_tokens == 7, resp.usage
    assert isinstance(text, str) and len(text) == 7, text

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello from the openai client"}],
        max_tokens=7,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    streamed = "".join(pieces)
    assert streamed == text, (streamed, text)
    assert finish == "length", finish
    assert usage is not None and usage.completion_tokens == 7, usage

    completion = client.completions.create(model=model, prompt="Hello", max_tokens=4, temperature=0)
    assert len(completion.choices[0].text) == 4, completion

    try:
        client.chat.completions.create(
            model="not-served", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
        raise AssertionError("expected NotFoundError")
    except openai.NotFoundError as err:
        assert "not-served" in str(err), err

    print(f"openai {openai.__version__}: chat, stream, completion and error checks passed")


if __name__ == "__main__":
    main()
