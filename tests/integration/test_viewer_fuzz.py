"""The viewer's API fuzzed from its own OpenAPI schema (schemathesis): valid and invalid
requests, signed in as an administrator and as a pathologist, on the seeded slide and on
random IDs. Zero 5xx answers and no stack trace in any answer."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from core.settings import Settings
from tests.integration.viewer_kit import Seeded, seed, sign_in, viewer_on
from viewer.login_guard import LoginGuard

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              # schemathesis' own strategies use `random`; not ours to fix
              pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")]
EXAMPLES = 20


def fuzz(base_url: str, spec: dict, headers: dict[str, str], path_parameters: dict | None) -> list[str]:
    """Run in a thread: schemathesis calls the server with blocking requests."""
    problems: list[str] = []
    schema = schemathesis.openapi.from_dict(spec)
    for result in schema.get_all_operations():
        operation = result.ok()
        fixed = {k: v for k, v in (path_parameters or {}).items()
                 if any(p.name == k for p in operation.path_parameters)}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed or None)

            @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def check(case) -> None:  # type: ignore[no-untyped-def]
                response = case.call(base_url=base_url, headers={**(case.headers or {}), **headers}, timeout=60)
                if response.status_code >= 500 or "Traceback" in response.text:
                    problems.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                    f"{response.text[:200]}")

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
                if mode is GenerationMode.POSITIVE:
                    raise
    return problems


async def test_fuzzing_the_api_gives_no_server_error(stack: Settings) -> None:
    seeded: Seeded = await seed(stack)
    async with viewer_on(stack) as (context, url), httpx.AsyncClient(base_url=url) as client:
        context.guard = LoginGuard(10_000, 60.0)  # fuzzed sign-ins must not lock this test out
        spec = (await client.get("/api/openapi.json")).json()
        admin = seeded.user("admin")
        pathologist = seeded.user("path")
        problems = []
        for name, ids in ((admin, {"exam_id": seeded.exam_id, "slide_number": 1}), (pathologist, None),
                          (pathologist, {"exam_id": seeded.exam_id, "slide_number": 1})):
            headers = await sign_in(client, name, seeded.passwords[name])
            problems += await asyncio.to_thread(fuzz, url, spec, headers, ids)
    assert problems == []
