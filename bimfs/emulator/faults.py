"""Injected faults: latency, failures, throttling, dropped connections, slow streams, quirks,
hostile answers.

Faults apply to ``/v2`` requests only. Every such request draws the same three random numbers
(fail, throttle, reset) from one ``random.Random`` seeded by ``--fault-seed``, so that a given
sequence of requests meets the same faults on every run.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from bimfs.emulator.hostile import check_rules


@dataclass
class FaultSettings:
    """The current fault configuration (names as in ``POST /_emulator/faults``)."""

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after: float = 1.0
    reset_rate: float = 0.0
    stream_rate: int = 0
    range_enabled: bool = True
    quirks: bool = False
    # Answers sent this long after the request was handled (an upload is stored, its answer
    # late: what a client killed or cut off at that moment never learns).
    hold_ms: float = 0.0
    # Route keys (``"GET /v2/{slug}/attachments/{id}/download"``) the random faults and
    # ``hold_ms`` are limited to; empty means every /v2 route. Latency and stream_rate always
    # apply to all.
    routes: list[str] = field(default_factory=list)
    # Hostile answers: rules rewriting JSON answers (see ``bimfs.emulator.hostile``).
    answers: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Draw:
    """What happens to one request."""

    fail_status: int | None = None
    throttle: bool = False
    reset: bool = False


_RATES = ("fail_rate", "throttle_rate", "reset_rate")


class Faults:
    """Holds the settings and the random source; ``draw`` decides one request's fate."""

    def __init__(self, settings: FaultSettings, seed: int | None = None) -> None:
        self.settings = settings
        self.seed = seed
        self.rng = random.Random(seed)

    def as_json(self) -> dict[str, Any]:
        """The settings as JSON (plus ``fault_seed``)."""
        data = asdict(self.settings)
        data["fault_seed"] = self.seed
        return data

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; ``ValueError`` naming the first bad key or value (nothing
        is changed then)."""
        new = FaultSettings(**asdict(self.settings))
        reseed: int | None = None
        for key, value in changes.items():
            if key == "fault_seed":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError("fault_seed must be an integer")
                reseed = value
            elif key in _RATES:
                rate = _number(key, value)
                if not 0.0 <= rate <= 1.0:
                    raise ValueError(f"{key} must be between 0 and 1")
                setattr(new, key, rate)
            elif key in ("latency_ms", "retry_after", "hold_ms"):
                amount = _number(key, value)
                if amount < 0:
                    raise ValueError(f"{key} must not be negative")
                setattr(new, key, amount)
            elif key == "stream_rate":
                rate = _number(key, value)
                if rate < 0:
                    raise ValueError("stream_rate must not be negative")
                new.stream_rate = int(rate)
            elif key in ("range_enabled", "quirks"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                setattr(new, key, value)
            elif key == "routes":
                if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
                    raise ValueError("routes must be a list of route keys")
                new.routes = list(value)
            elif key == "answers":
                new.answers = check_rules(value)
            else:
                raise ValueError(f"unknown fault {key}")
        self.settings = new
        if reseed is not None:
            self.seed = reseed
            self.rng = random.Random(reseed)

    def draw(self, route_key: str) -> Draw:
        """Decide the fate of one /v2 request (always consumes three numbers)."""
        s = self.settings
        fail, throttle, reset = self.rng.random(), self.rng.random(), self.rng.random()
        if s.routes and route_key not in s.routes:
            return Draw()
        if fail < s.fail_rate:
            return Draw(fail_status=503 if self.rng.random() < 0.5 else 500)
        if throttle < s.throttle_rate:
            return Draw(throttle=True)
        return Draw(reset=reset < s.reset_rate)

    def hold(self, route_key: str) -> float:
        """Seconds to hold the answer of a handled request on this route."""
        s = self.settings
        if s.hold_ms <= 0 or (s.routes and route_key not in s.routes):
            return 0.0
        return s.hold_ms / 1000.0

    def retry_after_header(self) -> str:
        """The ``Retry-After`` value: whole seconds when integral (as HTTP wants)."""
        value = self.settings.retry_after
        return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number")
    return float(value)
