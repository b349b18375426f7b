"""Stage `sign`: sign each message before delivery.

Input: queue `sign`; output: the next stage (`deliver`). DKIM (RFC 6376, RFC 8463) and
S/MIME signing arrive with the signing work; until then the stage passes messages on
unchanged, so the pipeline already has its final shape. Reads no settings yet.
"""

from __future__ import annotations

from secumail.pipeline.bus import Job, StageResult
from secumail.pipeline.stage import StageContext


class SignStage:
    name = "sign"

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def handle(self, job: Job) -> StageResult:
        return StageResult.go_on()

    async def close(self) -> None:
        return None
