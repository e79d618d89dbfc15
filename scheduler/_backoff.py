from __future__ import annotations

import random

MAX_DELAY_MS = 3_600_000


def retry_delay_ms(attempt: int, base_ms: int, *, rng: random.Random | None = None) -> int:
    """Delay before retry number `attempt + 1`: doubles per attempt from `base_ms`, capped at an
    hour, then jittered by ±20% so that runs failing together do not retry together."""
    delay = min(base_ms * (2 ** min(attempt, 30)), MAX_DELAY_MS)
    jitter = (rng or random).uniform(0.8, 1.2)
    return max(1, int(delay * jitter))
