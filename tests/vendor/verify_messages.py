"""Checks messages with the vendored Standard Webhooks reference verifier.

Usage: python3 verify_messages.py SECRET FILE, where FILE holds a JSON list
of {"headers": {...}, "body_base64": "..."}. Prints one line per message:
"ok <type>" or "FAIL <reason>"; exits 1 if any failed.
"""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "standardwebhooks"))
from webhooks import Webhook  # noqa: E402

secret, path = sys.argv[1], sys.argv[2]
verifier = Webhook(secret)
failed = False
with open(path) as f:
    messages = json.load(f)
for message in messages:
    body = base64.b64decode(message["body_base64"])
    try:
        event = verifier.verify(body, message["headers"])
        print("ok", event["type"])
    except Exception as e:  # the library raises its own error types
        failed = True
        print("FAIL", type(e).__name__, e)
sys.exit(1 if failed else 0)
