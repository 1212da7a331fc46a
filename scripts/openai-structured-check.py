#!/usr/bin/env python3
"""Structured output and tool calling through the official `openai` Python SDK against a
running Indus (or any OpenAI-compatible server), repeated so that "valid every time" is a
count, not a hope:

    pip install openai==2.8.1 jsonschema==4.26.0
    python3 scripts/openai-structured-check.py --base-url http://127.0.0.1:8000/v1 --model M --runs 100

Checks, each --runs times with a different seed at temperature 1 (so a random-weight model
explores): client.chat.completions.parse(response_format=<pydantic model with nested objects,
arrays, enums, required fields, additionalProperties false>) returns a parsed object; a
json_schema response validates; vLLM's regex and choice constraints hold; tool_choice
"required" and a named function give calls whose arguments validate against the function's
schema; a streamed forced call adds up to the non-streamed one (same seed). With --agent, an
agent loop (forced call -> tool result -> answer) must end with a plain-text answer.
Prints one line per check with its pass count; exits non-zero unless every run passed.
"""

import argparse
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Literal

import jsonschema
from openai import OpenAI
from pydantic import BaseModel, ConfigDict, Field


class Tier(str, Enum):
    prepaid = "prepaid"
    postpaid = "postpaid"


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=24)
    tier: Tier


class Ticket(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer: Customer
    tags: list[Literal["billing", "network", "sim"]] = Field(min_length=1, max_length=3)
    priority: int = Field(ge=1, le=5)
    urgent: bool


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Lahore", "Karachi", "Quetta", "Islamabad"]},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TICKET = {
    "type": "function",
    "function": {
        "name": "open_ticket",
        "description": "Open a support ticket",
        "parameters": {
            "type": "object",
            "properties": {
                "msisdn": {"type": "string", "pattern": "^03[0-9]{9}$"},
                "issue": {"type": "string", "enum": ["billing", "network", "sim"]},
                "notes": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 2},
            },
            "required": ["msisdn", "issue"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TICKET]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def user(text):
    return [{"role": "user", "content": text}]


def check_calls(msg, allowed, exactly_one=False):
    calls = msg.tool_calls or []
    if not calls or (exactly_one and len(calls) != 1):
        return f"{len(calls)} calls"
    for c in calls:
        if c.function.name not in allowed:
            return f"unknown function {c.function.name}"
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
        if not c.id.startswith("call_"):
            return f"bad id {c.id}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--model", required=True)
    ap.add_argument("--api-key", default="unused")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    ap.add_argument("--agent", action="store_true", help="also run the agent loop")
    args = ap.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=300)
    common = dict(model=args.model, temperature=1.0, max_tokens=args.max_tokens)
    failed = 0

    def attempt(one, i):
        try:
            return one(i)
        except Exception as e:  # a failed run is counted and shown, not fatal
            return f"{type(e).__name__}: {e}"

    def run(name, one):
        nonlocal failed
        # Concurrent requests so the server batches them, as it would real traffic.
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            errors = list(pool.map(lambda i: attempt(one, i), range(args.runs)))
        failures = [e for e in errors if e is not None]
        passed, last = args.runs - len(failures), failures[-1] if failures else None
        failed += args.runs - passed
        print(f"{name}: {passed}/{args.runs}" + (f" (last failure: {last})" if last else ""))

    def parse_ticket(i):
        r = client.chat.completions.parse(
            messages=user("Open a ticket for Ayesha, postpaid, no signal since morning."),
            response_format=Ticket, seed=i, **common)
        t = r.choices[0].message.parsed
        return None if isinstance(t, Ticket) else f"not parsed ({r.choices[0].finish_reason})"

    def json_schema(i):
        schema = Ticket.model_json_schema()
        r = client.chat.completions.create(
            messages=user("A ticket as JSON."), seed=i,
            response_format={"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema, "strict": True}},
            **common)
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)
        return None

    def regex(i):
        r = client.chat.completions.create(
            messages=user("A Pakistani mobile number."), seed=i,
            extra_body={"structured_outputs": {"regex": "03[0-9]{2}-[0-9]{7}"}}, **common)
        text = r.choices[0].message.content
        return None if re.fullmatch("03[0-9]{2}-[0-9]{7}", text) else repr(text)

    def choice(i):
        options = ["billing", "network", "sim card"]
        r = client.chat.completions.create(
            messages=user("Which department? My SIM is blocked."), seed=i,
            extra_body={"structured_outputs": {"choice": options}}, **common)
        text = r.choices[0].message.content
        return None if text in options else repr(text)

    def required(i):
        r = client.chat.completions.create(
            messages=user("Is the network down in Quetta? My number is 03001234567."), seed=i,
            tools=TOOLS, tool_choice="required", parallel_tool_calls=False, **common)
        c = r.choices[0]
        if c.finish_reason != "tool_calls":
            return f"finish_reason {c.finish_reason}"
        return check_calls(c.message, SCHEMAS, exactly_one=True)

    def required_parallel(i):
        # The grammar bounds each call but not how many a model chains: a choice may stop at
        # max_tokens, and then every call it finished must still validate.
        r = client.chat.completions.create(
            messages=user("Weather in Lahore and Karachi, and open a ticket for 03001234567."), seed=i,
            tools=TOOLS, tool_choice="required", **common)
        c = r.choices[0]
        if c.finish_reason not in ("tool_calls", "length"):
            return f"finish_reason {c.finish_reason}"
        return check_calls(c.message, SCHEMAS)

    def named(i):
        r = client.chat.completions.create(
            messages=user("My number 03001234567 has no signal."), seed=i, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "open_ticket"}}, **common)
        return check_calls(r.choices[0].message, ["open_ticket"], exactly_one=True)

    def stream_agrees(i):
        kw = dict(messages=user("Weather in Lahore?"), seed=i, tools=TOOLS, tool_choice="required", **common)
        whole = client.chat.completions.create(**kw).choices[0]
        calls, finish = {}, None
        for chunk in client.chat.completions.create(stream=True, **kw):
            if not chunk.choices:
                continue
            ch = chunk.choices[0]
            for d in ch.delta.tool_calls or []:
                entry = calls.setdefault(d.index, ["", ""])
                if d.function and d.function.name:
                    entry[0] = d.function.name
                if d.function and d.function.arguments:
                    entry[1] += d.function.arguments
            finish = ch.finish_reason or finish
        want = [[c.function.name, c.function.arguments] for c in whole.message.tool_calls or []]
        got = [calls[k] for k in sorted(calls)]
        if got != want or finish != whole.finish_reason:
            return f"stream {got} {finish} != {want} {whole.finish_reason}"
        return None

    run("parse(response_format=Ticket)", parse_ticket)
    run("response_format json_schema", json_schema)
    run("structured_outputs regex", regex)
    run("structured_outputs choice", choice)
    run("tool_choice required (one call)", required)
    run("tool_choice required (parallel calls)", required_parallel)
    run("tool_choice named", named)
    run("stream == non-stream (required)", stream_agrees)

    if args.agent:
        messages = user("What is the weather in Lahore right now?")
        r = client.chat.completions.create(
            messages=messages, tools=TOOLS, temperature=0, max_tokens=args.max_tokens, model=args.model,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        call = r.choices[0].message.tool_calls[0]
        city = json.loads(call.function.arguments)["city"]
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
        messages.append({"role": "tool", "tool_call_id": call.id,
                         "content": json.dumps({"city": city, "temperature_c": 31, "sky": "clear"})})
        final = client.chat.completions.create(
            messages=messages, tools=TOOLS, temperature=0, max_tokens=args.max_tokens, model=args.model)
        f = final.choices[0]
        print(f"agent loop: call get_weather({call.function.arguments}) -> answer "
              f"({f.finish_reason}): {f.message.content!r}")
        if not (f.message.content or "").strip() or f.message.tool_calls:
            print("agent loop: no plain-text final answer")
            failed += 1

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
