#!/usr/bin/env python3
"""The fallback: a local, rule-based answer that is always there."""
import json
import sys

item = json.load(sys.stdin)
print(json.dumps({"output": f"{item['prompt']} (answer from the local fallback)"}))
