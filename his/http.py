"""JSON HTTP endpoint for systems without HL7: the same events, posted as JSON.

    POST /v1/admissions   {"patient_id": ..., "admitted_at": "...Z", "visit_id"?, "ward"?, "identity"?}
    POST /v1/discharges   {"patient_id": ..., "discharged_at": "...Z", "visit_id"?}
    GET  /health

Every ``/v1`` request must carry a sender's key, ``Authorization: Bearer <key>`` (his.auth):
without one, or with an unknown one, the answer is 401 before the body is read, and nothing is
published. 202 with the event id once Kafka has the event; 422 naming the invalid fields (never
their values, which may be identity data); 503 when Kafka could not take it (retry later).
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from his.adapter import EventRefused, HisAdapter, PublishFailed
from his.auth import ApiKeys
from schemas.events import PatientAdmitted, PatientDischarged
from schemas.registry import describe_validation_error

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024
UNAUTHORIZED = {"error": "a sender key is required: Authorization: Bearer <key>"}


def create_http_app(adapter: HisAdapter, keys: ApiKeys) -> FastAPI:
    app = FastAPI(title="slidestream HIS adapter", docs_url=None, redoc_url=None, openapi_url=None)

    async def accept(request: Request, model: type[PatientAdmitted] | type[PatientDischarged]) -> JSONResponse:
        authorization = request.headers.get("authorization")
        sender = keys.sender(authorization)
        if sender is None:
            # The client's address and whether a key was shown; never the key or the body.
            log.warning("his.http_unauthorized", client=request.client.host if request.client else None,
                        key_shown=bool(authorization))
            return JSONResponse(UNAUTHORIZED, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="slidestream-his"'})
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            event = model.model_validate_json(body)
        except ValidationError as exc:
            reason, fields = describe_validation_error(exc)
            return JSONResponse({"error": reason, "fields": list(fields)}, status_code=422)
        try:
            await adapter.publish(event)
        except PublishFailed as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "5"})
        except EventRefused as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        log.info("his.http_accepted", sender=sender, event_type=event.event_type, event_id=str(event.event_id))
        return JSONResponse({"event_id": str(event.event_id), "event_type": event.event_type}, status_code=202)

    @app.post("/v1/admissions")
    async def admissions(request: Request) -> JSONResponse:
        return await accept(request, PatientAdmitted)

    @app.post("/v1/discharges")
    async def discharges(request: Request) -> JSONResponse:
        return await accept(request, PatientDischarged)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
