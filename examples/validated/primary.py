#!/usr/bin/env python3
"""Stands in for a paid API: reads the item on stdin, answers on stdout.
Sometimes it answers with a plan instead of the text (rejected by
[agent.validate]), and item 7 always errors (the fallback takes over)."""
import json
import sys

item = json.load(sys.stdin)
n = item["id"]
if n == 7:
    print("upstream error 500", file=sys.stderr)
    sys.exit(1)
if n % 5 == 0:
    print(json.dumps({"output": "Here is a plan: first outline, then write."}))
    sys.exit(0)
text = f"{item['prompt']} (answer from the primary model)"
print(json.dumps({"output": text, "usage": {"total_tokens": len(text) // 4}}))
