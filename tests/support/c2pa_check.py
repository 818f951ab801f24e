"""Reads an audio file's C2PA manifest with c2pa-python (the C2PA project's reader) and prints
what it found as JSON: {"state", "soft_binding", "voxproof", "actions", "failures"}.

usage: c2pa_check.py FILE TRUST_ANCHOR_PEM [SIDECAR]
"""
import json
import sys

import c2pa

path, anchor_path = sys.argv[1], sys.argv[2]
sidecar = sys.argv[3] if len(sys.argv) > 3 else None
with open(anchor_path, encoding="utf-8") as f:
    anchors = f.read()
# Settings built from a dict start with an empty list of accepted signing EKUs (the library's
# built-in list only applies when no trust settings are given), so it is named here: the C2PA
# claim-signing usage our certificates carry.
settings = c2pa.Settings.from_dict({
    "trust": {"user_anchors": anchors, "trust_config": "1.3.6.1.4.1.62558.2.1\n"},
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
})
context = c2pa.Context(settings=settings)
formats = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac",
           "m4b": "audio/mp4", "m4a": "audio/mp4", "opus": "audio/ogg"}
fmt = formats[path.rsplit(".", 1)[-1]]
with open(path, "rb") as stream:
    manifest_data = open(sidecar, "rb").read() if sidecar else None
    reader = c2pa.Reader(fmt, stream, manifest_data, context)
    active = reader.get_active_manifest() or {}
    results = reader.get_validation_results() or {}
    state = reader.get_validation_state()

assertions = {a["label"]: a.get("data") for a in active.get("assertions", [])}
actions = assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}
print(json.dumps({
    "state": state,
    "soft_binding": assertions.get("c2pa.soft-binding"),
    "voxproof": assertions.get("io.voxproof.provenance"),
    "actions": [a.get("action") for a in actions.get("actions", [])],
    "failures": (results.get("activeManifest") or {}).get("failure", []),
}))
