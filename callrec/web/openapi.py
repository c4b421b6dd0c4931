"""The OpenAPI 3.1 document of /api/ (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

# (method, path, summary, role, request body fields (name -> JSON type), query parameters)
_OPS: tuple[tuple[str, str, str, str, dict[str, str], tuple[str, ...]], ...] = (
    ("post", "/api/session", "Log in; sets the session cookie, returns the CSRF token", "any",
     {"username": "string", "password": "string"}, ()),
    ("get", "/api/session", "The logged-in account and its CSRF token", "any", {}, ()),
    ("delete", "/api/session", "Log out", "any", {}, ()),
    ("get", "/api/calls", "Search calls, newest first (keyset pages: pass `next` as `after`)",
     "reviewer, privacy", {},
     ("number", "service", "agent", "since", "until", "end_reason", "after", "limit")),
    ("get", "/api/calls/{call_id}", "One call's metadata", "reviewer, privacy", {}, ()),
    ("post", "/api/calls/{call_id}/listen",
     "State the purpose of listening to one call (audited); grants the audio for this session",
     "reviewer (mode listen), privacy (mode disclose)",
     {"purpose": "string", "mode": "string"}, ()),
    ("get", "/api/calls/{call_id}/audio",
     "The recording (audio/wav, HTTP Range supported); needs a grant", "as granted", {},
     ("mode",)),
    ("get", "/api/calls/{call_id}/download", "Download the recording (audited)", "reviewer",
     {}, ()),
    ("post", "/api/calls/{call_id}/disclosures",
     "Cut a disclosure clip [from, to) into a bundle (§8)", "privacy",
     {"from": "string", "to": "string", "recipient": "string", "legal_basis": "string",
      "approved_by": "string"}, ()),
    ("get", "/api/requests", "Access and erasure requests (open ones, overdue first)",
     "privacy", {}, ("closed",)),
    ("post", "/api/requests/access", "Open a right-of-access case", "privacy",
     {"number": "string", "verified_by": "string", "method": "string", "received": "string"},
     ()),
    ("post", "/api/requests/{case_id}/export", "Export the case's bundle; answers the case",
     "privacy", {}, ()),
    ("post", "/api/requests/erase", "Erase a number's calls, or refuse with a reason",
     "privacy",
     {"number": "string", "verified_by": "string", "method": "string", "received": "string",
      "refuse_ground": "string"}, ()),
    ("get", "/bundles/{bundle_id}", "Download an export or disclosure bundle (its maker only)",
     "privacy", {}, ()),
    ("get", "/api/holds", "Legal holds", "privacy", {}, ("released",)),
    ("post", "/api/holds", "Place a hold on a call or a number", "privacy",
     {"call_id": "string", "number": "string", "reason": "string"}, ()),
    ("post", "/api/holds/{hold_id}/release", "Release a hold", "privacy",
     {"reason": "string"}, ()),
    ("get", "/api/retention", "Retention status: cutoff, due calls, last receipt",
     "privacy, processor", {}, ()),
    ("get", "/api/audit", "Audit entries, newest first", "privacy", {},
     ("actor", "action", "target", "since", "until", "limit")),
    ("get", "/api/audit/verify", "Verify the audit hash chain", "privacy, processor", {}, ()),
    ("get", "/api/users", "Accounts", "admin", {}, ()),
    ("post", "/api/users", "Add an account", "admin",
     {"username": "string", "password": "string", "roles": "array", "full_name": "string",
      "expires": "string", "can_listen": "boolean"}, ()),
    ("post", "/api/users/{username}/roles", "Replace roles (and expiry, listening grant)",
     "admin", {"roles": "array", "expires": "string", "can_listen": "boolean"}, ()),
    ("post", "/api/users/{username}/disabled", "Disable or enable an account", "admin",
     {"disabled": "boolean"}, ()),
    ("get", "/api/prompts", "Prompts with their live versions", "admin", {}, ()),
    ("put", "/api/prompts/{language}/{name}/text", "Replace a prompt's text and rebuild",
     "admin", {"text": "string"}, ()),
    ("post", "/api/prompts/{language}/{name}/studio",
     "Upload a studio recording (the body is the WAV, FLAC or Ogg file; at most 8 MB, 60 s)",
     "admin", {}, ()),
    ("post", "/api/prompts/build", "Rebuild every prompt", "admin", {}, ()),
    ("get", "/api/routing", "The routing file and the version in force", "admin", {}, ()),
    ("put", "/api/routing", "Check and apply a new routing file (no restart)", "admin",
     {"text": "string"}, ()),
)


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, role, body, query in _OPS:
        op: dict[str, Any] = {
            "summary": summary,
            "description": f"Roles: {role}. Denials answer 403 and are audited.",
            "responses": {
                "200": {"description": "OK"}, "201": {"description": "Created"},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "409": {"$ref": "#/components/responses/Error"},
            },
        }
        params = [{"name": name.strip("{}"), "in": "path", "required": True,
                   "schema": {"type": "string"}}
                  for name in path.split("/") if name.startswith("{")]
        params += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                   for q in query]
        if params:
            op["parameters"] = params
        if body:
            props = {k: ({"type": "array", "items": {"type": "string"}} if t == "array"
                         else {"type": t}) for k, t in body.items()}
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"type": "object", "properties": props}}}}
        if path.endswith("/studio"):
            binary = {"schema": {"type": "string", "format": "binary"}}
            op["requestBody"] = {"required": True, "content": {
                "audio/wav": binary, "audio/flac": binary, "audio/ogg": binary}}
        if path != "/api/session" or method != "post":
            op["security"] = [{"session": []}]
            if method != "get":
                op["description"] += " Send the session's CSRF token as X-CSRF-Token."
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "callrec console API", "version": "1",
                 "description": "Calls, requests, holds, disclosures, retention, audit, "
                                "accounts, prompts and routing of the recording archive."},
        "paths": paths,
        "components": {
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie",
                                            "name": "callrec_session"}},
            "responses": {"Error": {"description": "An error", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "error": {"type": "integer"}, "message": {"type": "string"}}}}}}},
        },
    }
