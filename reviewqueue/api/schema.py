"""OpenAPI additions for the two agent endpoints that are not DRF views: the async long-poll
(GET /api/v1/steps/{id}/decision) and OTLP/HTTP ingestion (POST /v1/traces)."""

from __future__ import annotations

from typing import Any

DECISION = {
    "type": "object",
    "properties": {
        "status": {
            "type": "string",
            "enum": ["pending", "auto_approved", "approved", "corrected", "rejected", "expired"],
        },
        "output": {"description": "The final output (the correction, for corrected steps)."},
        "reason": {"type": "string"},
        "reviewer": {"type": "string", "nullable": True},
        "decided_at": {"type": "string", "format": "date-time", "nullable": True},
        "escalated": {"type": "boolean", "description": "Pending steps only: an item of it was escalated."},
        "queue": {"type": "string", "nullable": True, "description": "Pending steps only: the queue it waits in."},
    },
}


def add_agent_endpoints(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    paths = result.setdefault("paths", {})
    paths["/api/v1/steps/{step_id}/decision"] = {
        "get": {
            "operationId": "steps_decision",
            "summary": "The step's decision; with wait=N (0..60) a long-poll answering as soon as it is decided",
            "tags": ["steps"],
            "security": [{"agentApiKey": []}],
            "parameters": [
                {"name": "step_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                {"name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 60}},
            ],
            "responses": {
                "200": {"description": "The decision", "content": {"application/json": {"schema": DECISION}}},
                "400": {"description": "Invalid wait"},
                "401": {"description": "No or invalid API key"},
                "404": {"description": "No such step of this agent"},
            },
        }
    }
    paths["/v1/traces"] = {
        "post": {
            "operationId": "otlp_traces",
            "summary": "OTLP/HTTP traces (protobuf or OTLP/JSON, gzip allowed); spans become steps (docs/agents.md)",
            "tags": ["otlp"],
            "security": [{"agentApiKey": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
            "responses": {
                "200": {"description": "ExportTraceServiceResponse (partial_success for rejected spans)"},
                "400": {"description": "Undecodable body"},
                "401": {"description": "No or invalid API key"},
                "413": {"description": "Body too large"},
                "415": {"description": "Unsupported Content-Type or Content-Encoding"},
            },
        }
    }
    return result
