"""``/api/docs``: the OpenAPI document as a readable page, rendered here (no CDN, no script)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template_string

docs_bp = Blueprint("docs", __name__)
MAX_DEPTH = 4
ERROR_REF = "#/components/schemas/Error"

PAGE = """{% macro fields(rows) %}{% if rows %}<table>{% for r in rows %}
<tr><td style="padding-left:{{ 8 + 16 * r.depth }}px"><code>{{ r.name }}</code>
{%- if r.required %}<span class="req">*</span>{% endif %}</td><td>{{ r.type }}</td>
<td>{{ r.description }}</td></tr>{% endfor %}</table>{% endif %}{% endmacro -%}
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ info.title }} {{ info.version }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2733;display:flex}
nav{position:sticky;top:0;height:100vh;overflow:auto;width:21rem;flex:none;background:#f3f5f8;padding:1rem;
box-sizing:border-box;font-size:13px}nav a{display:block;color:#1d2733;text-decoration:none;padding:1px 0;
white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
main{padding:1rem 2rem;max-width:70rem}h1{margin-top:0}h2{border-bottom:1px solid #ccd;padding-bottom:.2rem}
.op{border:1px solid #d5dbe3;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}
.m{display:inline-block;min-width:4.2rem;font-weight:700;font-family:monospace;text-transform:uppercase}
.get{color:#1565c0}.post{color:#2e7d32}.delete{color:#c62828}.put,.patch{color:#ef6c00}
code,.path{font-family:ui-monospace,monospace}.path{font-weight:600}table{border-collapse:collapse;margin:.3rem 0}
td,th{border:1px solid #e1e5ea;padding:2px 8px;text-align:left;vertical-align:top;font-size:13px}
th{background:#f7f8fa}.req{color:#c62828}.muted{color:#667}
.tag{font-size:11px;border:1px solid #99a;border-radius:3px;padding:0 4px;color:#556}
</style></head><body>
<nav><strong>{{ info.title }}</strong><br><a href="{{ url }}">openapi.json</a>
{% for group, ops in groups %}<p><strong>{{ group }}</strong>{% for op in ops %}
<a href="#{{ op.anchor }}"><span class="m {{ op.method }}">{{ op.method }}</span>{{ op.short }}</a>{% endfor %}</p>
{% endfor %}</nav>
<main><h1>{{ info.title }} <span class="muted">{{ info.version }}</span></h1><p>{{ info.description }}</p>
<p>Send <code>Authorization: Bearer &lt;token&gt;</code> on every call marked <span class="tag">token</span>.
Every error answers <code>{"error": {"code", "message", "details"}}</code> (<a href="#Error">Error</a>) with its
status. The machine-readable document is at <a href="{{ url }}"><code>{{ url }}</code></a>.</p>
{% for group, ops in groups %}<h2 id="{{ group }}">{{ group }}</h2>{% for op in ops %}
<div class="op" id="{{ op.anchor }}"><span class="m {{ op.method }}">{{ op.method }}</span>
<span class="path">{{ op.path }}</span>{% if op.secured %} <span class="tag">token</span>{% endif %}
<p>{{ op.summary }}{% if op.description %}<br><span class="muted">{{ op.description }}</span>{% endif %}</p>
{% if op.parameters %}<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>
{% for p in op.parameters %}<tr><td><code>{{ p.name }}</code>
{%- if p.required %}<span class="req">*</span>{% endif %}</td>
<td>{{ p.in }}</td><td>{{ p.type }}</td><td>{{ p.description }}</td></tr>{% endfor %}</table>{% endif %}
{% if op.body %}<p><strong>Request body</strong> <code>{{ op.body_type }}</code></p>{{ fields(op.body) }}{% endif %}
<p><strong>Responses</strong></p><table><tr><th>status</th><th>meaning</th><th>body</th></tr>
{% for r in op.responses %}<tr><td>{{ r.status }}</td><td>{{ r.description }}</td><td>{{ fields(r.rows) }}</td></tr>
{% endfor %}</table></div>{% endfor %}{% endfor %}
<h2 id="Error">Error</h2><p>The body of every error answer.</p>{{ fields(error_rows) }}</main></body></html>
"""


def _resolve(document: dict, schema: dict) -> dict:
    """Follow a local ``$ref`` (and a single-entry ``allOf`` wrapper)."""
    seen = 0
    while isinstance(schema, dict) and seen < 10:
        seen += 1
        if "$ref" in schema:
            target = document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target.get(part, {})
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = {**_resolve(document, schema["allOf"][0]), **{k: v for k, v in schema.items() if k != "allOf"}}
        else:
            break
    return schema or {}


def type_name(document: dict, schema: dict) -> str:
    """A short type description: ``string``, ``array of Task``, ``object``, with ``| null`` when nullable."""
    ref = schema.get("$ref") or ((schema.get("allOf") or [{}])[0].get("$ref") if schema.get("allOf") else None)
    resolved = _resolve(document, schema)
    if ref:
        name = ref.rsplit("/", 1)[-1]
    elif resolved.get("type") == "array":
        name = "array of " + type_name(document, resolved.get("items", {}))
    else:
        name = str(resolved.get("type", "any"))
        if resolved.get("enum"):
            name += " (" + " | ".join(str(v) for v in resolved["enum"]) + ")"
        if resolved.get("format"):
            name += f" ({resolved['format']})"
    return name + (" | null" if resolved.get("nullable") else "")


def field_rows(document: dict, schema: dict | None, depth: int = 0) -> list[dict]:
    """The properties of ``schema`` as indented rows, nested objects and arrays of objects expanded."""
    if not schema or depth > MAX_DEPTH:
        return []
    resolved = _resolve(document, schema)
    if resolved.get("type") == "array":
        return field_rows(document, resolved.get("items"), depth)
    rows = []
    required = set(resolved.get("required", []))
    for name, prop in (resolved.get("properties") or {}).items():
        inner = _resolve(document, prop)
        rows.append(
            {
                "name": name,
                "type": type_name(document, prop),
                "required": name in required,
                "description": inner.get("description", ""),
                "depth": depth,
            }
        )
        nested = inner.get("items") if inner.get("type") == "array" else inner
        if _resolve(document, nested or {}).get("properties"):
            rows.extend(field_rows(document, nested, depth + 1))
    return rows


def operations(document: dict) -> list[tuple[str, list[dict]]]:
    """The operations grouped by the first path segment after ``/api/v1``."""
    groups: dict[str, list[dict]] = {}
    for path, item in document.get("paths", {}).items():
        group = path.removeprefix("/api/v1/").split("/")[0] or "api"
        for method, op in item.items():
            body = (op.get("requestBody") or {}).get("content") or {}
            no_media: tuple[str | None, dict[str, Any]] = (None, {})
            body_type, body_schema = next(iter(body.items()), no_media)
            responses = []
            for status, answer in sorted(op.get("responses", {}).items()):
                content = answer.get("content") or {}
                media, media_schema = next(iter(content.items()), no_media)
                schema = (media_schema or {}).get("schema") or {}
                rows = [] if schema.get("$ref") == ERROR_REF else field_rows(document, schema)
                if media and not rows:
                    rows = [
                        {
                            "name": media,
                            "type": type_name(document, schema),
                            "required": False,
                            "description": "",
                            "depth": 0,
                        }
                    ]
                responses.append({"status": status, "description": answer.get("description", ""), "rows": rows})
            groups.setdefault(group, []).append(
                {
                    "method": method,
                    "path": path,
                    "short": path.removeprefix("/api/v1"),
                    "anchor": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "secured": bool(op.get("security")),
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "required": p.get("required", False),
                            "type": type_name(document, p.get("schema", {})),
                            "description": p.get("description", ""),
                        }
                        for p in op.get("parameters", [])
                    ],
                    "body": field_rows(document, (body_schema or {}).get("schema")),
                    "body_type": body_type,
                    "responses": responses,
                }
            )
    return sorted(groups.items())


@docs_bp.get("/api/docs")
def api_docs():
    """Human-readable API documentation, rendered from the OpenAPI document."""
    from server.api.openapi import build_document

    document = build_document(current_app)
    return render_template_string(
        PAGE,
        info=document["info"],
        groups=operations(document),
        error_rows=field_rows(document, {"$ref": ERROR_REF}),
        url="/api/v1/openapi.json",
    )
