"""bench-serve's floor: a BentoML service with the same route and request shape as the real one and no model.

What it costs BentoML itself (uvicorn, Starlette, its middlewares, pydantic in and out) to answer one request on
these cores: the part of the server's overhead that this project's code cannot remove.
"""

from __future__ import annotations

from typing import Annotated

import bentoml
from bentoml.validators import ContentType


@bentoml.service(name="echo", http={"host": "127.0.0.1"}, workers=1)
class Echo:
    @bentoml.api(route="/classify")
    async def classify(self, texts: list[str]) -> Annotated[list[dict], ContentType("application/json")]:
        return [{"label": "positive", "label_id": 1, "score": 1.0} for _ in texts]

    def __is_ready__(self) -> bool:
        return True
