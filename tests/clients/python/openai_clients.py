"""Parley's /v1 APIs driven by the official `openai` Python package.

Run by tests/it/clients.rs against a real server and the fake provider:
PARLEY_URL (the server), PARLEY_TOKEN (an API key for it), FAKE_URL (the fake provider,
whose /control/scripts queues its next replies). Each check prints its name; any failure
raises, and the process exits non-zero with the traceback.
"""

import json
import os
import time
import urllib.request

import openai
from openai import OpenAI

BASE = os.environ["PARLEY_URL"]
TOKEN = os.environ["PARLEY_TOKEN"]
FAKE = os.environ["FAKE_URL"]

client = OpenAI(base_url=BASE + "/v1", api_key=TOKEN, max_retries=0, timeout=30)


def script(*replies):
    """Queues the fake provider's next replies."""
    request = urllib.request.Request(
        FAKE + "/control/scripts",
        data=json.dumps(list(replies)).encode(),
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(request).read()


def parley(path):
    """GETs a Parley REST path as JSON."""
    request = urllib.request.Request(BASE + path, headers={"authorization": "Bearer " + TOKEN})
    return json.load(urllib.request.urlopen(request))


def check(name):
    def run(fn):
        fn()
        print("ok", name, flush=True)
        return fn

    return run


@check("models")
def _():
    models = client.models.list()
    assert [m.id for m in models.data], models


@check("chat: non-stream, stateless, with a system message and usage")
def _():
    script({"text": ["Four", "."]})
    completion = client.chat.completions.create(
        model="any",
        messages=[
            {"role": "system", "content": "You answer with one word."},
            {"role": "user", "content": "2+2?"},
        ],
    )
    assert completion.choices[0].message.content == "Four.", completion
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 15, completion.usage
    extra = completion.model_extra["parley"]
    assert extra["status"] == "done" and extra["session_id"], extra


@check("chat: stream with usage")
def _():
    script({"text": ["Hel", "lo", " there"]})
    stream = client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello there", text
    assert finish == "stop"
    assert usage is not None and usage.total_tokens == 15, usage


@check("chat: a session keeps the history; tools run server-side and stay out of the content")
def _():
    session = "py-chat-%d" % time.time_ns()
    script({"text": ["Noted: blue."]})
    first = client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "My colour is blue."}],
        extra_headers={"X-Session-Id": session},
    )
    assert first.choices[0].message.content == "Noted: blue."
    script(
        {"tool_call": {"id": "call_ls", "name": "list_dir", "args": {"path": "."}}},
        {"text": ["Your colour is blue."]},
    )
    # The client sends only the new message: Parley holds the history.
    stream = client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "What is my colour?"}],
        extra_headers={"X-Session-Id": session},
        stream=True,
    )
    text, activity = "", []
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        extra = (chunk.model_extra or {}).get("parley")
        if extra and extra.get("type"):
            activity.append(extra["type"])
    # The fake's tool step says "Let me check. " before calling the tool.
    assert text == "Let me check. \n\nYour colour is blue.", repr(text)
    assert "tool_call" in activity and "tool_result" in activity, activity
    detail = parley("/api/sessions/" + session)
    contents = [m["content"] for m in detail["messages"] if m["role"] == "user"]
    assert contents == ["My colour is blue.", "What is my colour?"], contents
    timeline = parley("/api/sessions/%s/tool-calls" % session)
    assert [c["name"] for c in timeline["items"]] == ["list_dir"], timeline


@check("chat: errors raise the SDK's exception classes")
def _():
    bad_key = OpenAI(base_url=BASE + "/v1", api_key="wrong", max_retries=0)
    try:
        bad_key.chat.completions.create(model="any", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as err:
        assert err.status_code == 401 and err.code == "AUTH_ERROR", err.body
    try:
        client.chat.completions.create(
            model="any", messages=[{"role": "assistant", "content": "hello"}]
        )
        raise AssertionError("a conversation without a user message was accepted")
    except openai.BadRequestError as err:
        assert err.param == "messages", err.body
    try:
        client.chat.completions.create(model="any", messages=[{"role": "user"}], n=3)
        raise AssertionError("n=3 was accepted")
    except openai.BadRequestError as err:
        assert err.param == "n", err.body
    script({"status": 400, "message": "upstream exploded"})
    try:
        client.chat.completions.create(model="any", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("a failed turn answered 200")
    except openai.InternalServerError as err:
        assert err.status_code == 502 and err.code == "PROVIDER_ERROR", err.body
        assert "upstream exploded" not in str(err.body), "provider internals leaked"
    # The session's queue holds one waiting turn: a third message is refused with 429.
    session = "py-busy-%d" % time.time_ns()
    # The first turn streams for 10 s unless cancelled: ample time for the next two.
    script({"text": ["slow"] * 100, "delay_ms": 100}, {"text": ["queued"]})
    busy = client.responses.create(input="one", background=True, metadata={"session_id": session})
    two = client.responses.create(input="two", background=True, previous_response_id=busy.id)
    try:
        client.chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": "three"}],
            extra_headers={"X-Session-Id": session},
        )
        raise AssertionError("a full queue accepted a message")
    except openai.RateLimitError as err:
        assert err.response.headers.get("retry-after"), err.response.headers
        assert err.code == "SESSION_QUEUE_FULL", err.body
    client.responses.cancel(busy.id)
    # The waiting turn runs next, on its own script; the checks after this one need theirs.
    deadline = time.time() + 10
    while client.responses.retrieve(two.id).status != "completed" and time.time() < deadline:
        time.sleep(0.05)
    assert client.responses.retrieve(two.id).output_text == "queued"


@check("responses: non-stream, then previous_response_id continues the conversation")
def _():
    script({"text": ["Hi, Ada."]})
    first = client.responses.create(model="any", input="I am Ada.", instructions="Be kind.")
    assert first.status == "completed", first
    assert first.output_text == "Hi, Ada.", first.output_text
    assert first.usage.total_tokens == 15
    script({"text": ["You are Ada."]})
    second = client.responses.create(
        model="any", input="Who am I?", previous_response_id=first.id
    )
    assert second.output_text == "You are Ada."
    assert second.model_extra["parley"]["session_id"] == first.model_extra["parley"]["session_id"]
    again = client.responses.retrieve(first.id)
    assert again.output_text == "Hi, Ada." and again.status == "completed"
    try:
        client.responses.retrieve("resp_nope")
        raise AssertionError("an unknown response was found")
    except openai.NotFoundError:
        pass


@check("responses: stream with tool activity as mcp_call items")
def _():
    script(
        {"tool_call": {"id": "call_w", "name": "list_dir", "args": {"path": "."}}},
        {"text": ["Done", " looking."]},
    )
    events = list(client.responses.create(model="any", input="look around", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Let me check. Done looking.", deltas
    final = events[-1].response
    kinds = [item.type for item in final.output]
    assert kinds == ["message", "mcp_call", "message"], kinds
    assert final.output[1].name == "list_dir" and final.output[1].output is not None
    assert final.output_text == "Let me check. Done looking.", final.output_text


@check("responses: background, a dropped stream resumed with starting_after")
def _():
    parts = ["w%d " % i for i in range(12)]
    script({"text": parts, "delay_ms": 80})
    stream = client.responses.create(model="any", input="count", background=True, stream=True)
    seen, response_id, last = [], None, None
    for event in stream:
        last = event.sequence_number
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            seen.append(event.delta)
            if len(seen) == 3:
                break
    stream.close()  # the connection drops; a background response runs on
    resumed = client.responses.retrieve(response_id, stream=True, starting_after=last)
    rest, final = [], None
    for event in resumed:
        assert event.sequence_number > last, (event.sequence_number, last)
        last = event.sequence_number
        if event.type == "response.output_text.delta":
            rest.append(event.delta)
        if event.type == "response.completed":
            final = event.response
    assert "".join(seen + rest) == "".join(parts), (seen, rest)
    assert final is not None and final.output_text == "".join(parts)
    assert client.responses.retrieve(response_id).status == "completed"


@check("responses: cancel stops a background response")
def _():
    script({"text": ["slow "] * 50, "delay_ms": 100})
    response = client.responses.create(model="any", input="go on", background=True)
    assert response.status in ("queued", "in_progress"), response.status
    deadline = time.time() + 10
    while client.responses.retrieve(response.id).status == "queued" and time.time() < deadline:
        time.sleep(0.05)
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled", cancelled.status
    assert client.responses.retrieve(response.id).status == "cancelled"


print("all openai client checks passed", flush=True)
